"""detectron2's training command line (``default_argument_parser``), flag for flag.

FreeSeg's ``train_net.py`` is used as::

    python train_net.py --config-file FILE [--num-gpus N] [--eval-only] [--resume] KEY VALUE ...
"""
from __future__ import annotations

import argparse

_EPILOG = """\
Examples:

Train the prompts (stage 1) on 8 GPUs:
    $ {prog} --config-file configs/coco-stuff-164k-156/mask2former_learn_prompt_bs32_16k.yaml --num-gpus 8 \\
        OUTPUT_DIR output/prompts

Train the all-task model (stage 2) with those prompts, changing the learning rate:
    $ {prog} --config-file configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml \\
        --num-gpus 8 MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT output/prompts/model_final.pth \\
        SOLVER.BASE_LR 0.0001 OUTPUT_DIR output/alltask

Evaluate a trained model (PQ and mask AP; the _test_semseg config gives mIoU):
    $ {prog} --config-file configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml \\
        --eval-only MODEL.WEIGHTS weights/model_final.pth

On a CPU, after `make demo` (the quickstart's world and model; its configs set MODEL.DEVICE cpu):
    $ {prog} --config-file configs/quickstart/alltask.yaml --eval-only \\
        MODEL.WEIGHTS output/quickstart/stage2/model_final.pth

Several machines: run on each, with a reachable address of machine 0:
    (machine0)$ {prog} --config-file FILE --num-gpus 8 --num-machines 2 --machine-rank 0 --dist-url tcp://10.0.0.1:29500
    (machine1)$ {prog} --config-file FILE --num-gpus 8 --num-machines 2 --machine-rank 1 --dist-url tcp://10.0.0.1:29500
Under torchrun, pass --num-gpus 1: ranks come from its environment (RANK, WORLD_SIZE).
"""


def add_training_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add detectron2's training flags and the trailing ``KEY VALUE`` overrides to ``parser``."""
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the config file (YAML)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from the last checkpoint in OUTPUT_DIR (last_checkpoint file) instead of "
        "starting from MODEL.WEIGHTS",
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="only evaluate the model given by MODEL.WEIGHTS"
    )
    parser.add_argument(
        "--num-gpus", type=int, default=1, help="processes per machine: one per GPU (with MODEL.DEVICE cpu: gloo processes)"
    )
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)"
    )
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="initialization URL for distributed training, e.g. tcp://HOST:PORT; 'auto' picks a "
        "free local port (single machine only)",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides at the end of the command, as KEY VALUE pairs, e.g. "
        "SOLVER.IMS_PER_BATCH 8 INPUT.CROP.SIZE '(512, 512)'. See docs/config.md.",
    )
    return parser


def default_argument_parser(
    epilog: str | None = None, prog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """The parser of ``train_net.py`` / ``freeseg train`` (same flags as detectron2's).

    Args:
        epilog: text after the flag list (default: usage examples).
        prog: program name shown in usage lines (default: from ``sys.argv[0]``).
        description: text before the flag list.
    Returns:
        An ``ArgumentParser`` whose namespace has ``config_file, resume, eval_only, num_gpus,
        num_machines, machine_rank, dist_url, opts``.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.epilog = epilog if epilog is not None else _EPILOG.format(prog=parser.prog)
    return add_training_arguments(parser)
