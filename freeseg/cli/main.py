"""The ``freeseg`` console script: ``freeseg <command> [options]``.

Commands dispatch lazily (``freeseg --help`` imports no torch) to the modules that implement
them: ``train``/``eval`` -> ``freeseg.engine.train_net.run(args)`` (which launches the
per-process ``main(args)`` on ``--num-gpus`` x ``--num-machines`` processes, or torchrun's);
``demo``, ``quickstart``, ``export``, ``prepare`` -> ``freeseg.cli.<command>.main(argv)``. A :class:`FreeSegError` (bad input the user
can fix) is printed as one ``error: ...`` line on stderr with exit status 2 (or the error's
``exit_status``: 128 + the signal for training stopped by one), no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..utils.allocator import keep_freed_memory
from ..utils.errors import FreeSegError, closest
from .args import default_argument_parser


@dataclass(frozen=True)
class Command:
    module: str  # where the entry function lives
    summary: str  # one line for ``freeseg --help``
    description: str  # the paragraph for ``freeseg <command> --help``
    function: str = "main"  # the entry function's name in ``module``


COMMANDS: dict[str, Command] = {
    "train": Command(
        "freeseg.engine.train_net",
        "train a model: stage 1 prompts or the stage 2 all-task model (FreeSeg's train_net.py)",
        "Train a FreeSeg model from a config file; the same flags as FreeSeg/detectron2's "
        "train_net.py. Stage 1 (prompt learning) configs have META_ARCHITECTURE "
        "ProposalClipClassifier, stage 2 (all-task model) configs OpenVocabulary. Checkpoints, "
        "logs and the merged config.yaml go to OUTPUT_DIR.",
        function="run",
    ),
    "eval": Command(
        "freeseg.engine.train_net",
        "evaluate a trained model on the config's DATASETS.TEST (= train --eval-only)",
        "Evaluate the model in MODEL.WEIGHTS on every data set in DATASETS.TEST with the "
        "config's evaluators (mIoU / PQ / AP, seen and unseen classes); the same as "
        "'freeseg train --eval-only'.",
        function="run",
    ),
    "demo": Command(
        "freeseg.cli.demo",
        "segment your own images with any list of class names and save visualisations",
        "Run a trained model on images (files, folders or globs) with an open vocabulary and "
        "write the semantic / instance / panoptic results as images (FreeSeg's demo).",
    ),
    "quickstart": Command(
        "freeseg.cli.quickstart",
        "the built-in end-to-end example on a generated data set (what `make demo` runs)",
        "Train and evaluate a small model end to end on a data set generated on the fly, with "
        "no downloads; prints where the results are written.",
    ),
    "export": Command(
        "freeseg.cli.export",
        "write a trained model's mask network as an ONNX file (plus its text features)",
        "Export the class-agnostic network (backbone, pixel decoder, text-conditioned decoder) of a "
        "trained model to ONNX (any image size in multiples of 32, any number of classes), with the "
        "vocabulary's text features, and check the file with onnxruntime.",
    ),
    "prepare": Command(
        "freeseg.cli.prepare",
        "prepare data sets with FreeSeg's preparation scripts, or --list the built-in ones",
        "Run a data set preparation script (COCO-Stuff, VOC, ADE20K; FreeSeg's names) on the "
        "data under $DETECTRON2_DATASETS (default datasets/), or list the built-in data sets "
        "and the folder layout each expects.",
    ),
}


def _top_level_help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: freeseg <command> [options]",
        "",
        "FreeSeg (CVPR 2023), rebuilt: unified, universal, open-vocabulary segmentation.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()),
        "",
        "Run 'freeseg <command> --help' for the options of a command.",
        "FreeSeg's own entry points work too: python train_net.py ..., python demo.py ...",
    ]
    return "\n".join(lines)


def _load_main(command: str) -> Callable[..., Any]:
    """Import the command's module and return its entry function, or a one-line error."""
    module, function = COMMANDS[command].module, COMMANDS[command].function
    unavailable = f"command '{command}' is not available in this build"
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if missing == "freeseg" or missing.startswith("freeseg."):
            raise FreeSegError(f"{unavailable} ({missing} is missing)") from None
        raise FreeSegError(
            f"command '{command}' needs the Python module '{missing}', which is not installed; "
            "reinstall with 'make install' (or pip install the package that provides it)"
        ) from None
    fn = getattr(mod, function, None)
    if not callable(fn):
        raise FreeSegError(f"{unavailable} ({module}.{function} is missing)")
    return fn


def _validate_config(args: argparse.Namespace) -> None:
    """Merge the config file and overrides once before dispatching, so a typo fails in a
    second with one line instead of after spawning processes and importing the model."""
    from ..config import get_cfg

    if not args.config_file:  # the bare defaults are detectron2's GeneralizedRCNN: not a FreeSeg model
        raise FreeSegError(
            "no --config-file: pass the FreeSeg config to train or evaluate, e.g. "
            "--config-file configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml"
        )
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    if args.eval_only and not cfg.DATASETS.TEST:
        raise FreeSegError(
            "--eval-only with an empty DATASETS.TEST: nothing to evaluate; name the test data sets, "
            "e.g. DATASETS.TEST \"('coco_2017_test_stuff_sem_seg',)\""
        )
    from ..data.catalog import DatasetCatalog

    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST) if not args.eval_only else cfg.DATASETS.TEST:
        DatasetCatalog.require(name)  # a typo fails here, with the closest registered names


def _run_training(command: str, argv: Sequence[str], prog: str) -> int:
    spec = COMMANDS[command]
    parser = default_argument_parser(prog=prog, description=spec.description)
    args = parser.parse_args(list(argv))
    if command == "eval":
        args.eval_only = True
    _validate_config(args)
    result = _load_main(command)(args)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _run_delegated(command: str, argv: Sequence[str], prog: str) -> int:
    wants_help = any(a in ("-h", "--help") for a in argv)
    try:
        fn = _load_main(command)
    except FreeSegError as exc:
        if not wants_help:
            raise
        # Still say what the command is for, and why it cannot run here.
        print(f"usage: {prog} [options]\n\n{COMMANDS[command].description}\n\nerror: {exc}")
        return 0
    result = fn(list(argv))
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def run_command(command: str, argv: Sequence[str], prog: str | None = None) -> int:
    """Run one command with its own arguments; returns the exit status.

    Args:
        command: one of :data:`COMMANDS`.
        argv: the arguments after the command name.
        prog: name for usage lines (``train_net.py`` when called from that script).
    """
    prog = prog or f"freeseg {command}"
    keep_freed_memory()  # CPU speed: see freeseg.utils.allocator
    try:
        if command in ("train", "eval"):
            return _run_training(command, argv, prog)
        return _run_delegated(command, argv, prog)
    except FreeSegError as exc:
        message = " ".join(str(exc).split("\n")).strip()
        print(f"error: {message}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)  # e.g. 130 for training stopped by Ctrl-C
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` & co.: stop quietly (Python's documented recipe, so that
        # the interpreter's final flush does not raise again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``freeseg`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_top_level_help(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from .. import __version__

        print(f"freeseg {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        hint = closest(command, COMMANDS)
        extra = f"; did you mean '{hint}'?" if hint else f"; choose from {', '.join(COMMANDS)}"
        print(f"error: unknown command '{command}'{extra}", file=sys.stderr)
        return 2
    return run_command(command, rest)


if __name__ == "__main__":
    sys.exit(main())
