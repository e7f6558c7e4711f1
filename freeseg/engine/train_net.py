"""``train_net.py`` / ``freeseg train`` / ``freeseg eval``: FreeSeg's command line.

    train_net.py --config-file cfg.yaml [--num-gpus N] [--resume] [--eval-only] KEY VALUE ...

Both FreeSeg stages are plain models here: stage 1 (``ProposalClipClassifier``, prompt
learning) and stage 2 (``OpenVocabulary``, all tasks) train and evaluate through the same path.

Flow of :func:`main` (runs in every process): :func:`setup` (config, checks, output folder,
logs, seeds) → ``build_model`` → either evaluation with ``MODEL.WEIGHTS`` (``--eval-only``; the
checkpoint must fill the whole model) or :func:`do_train` (resume or load weights, DDP, trainer
with hooks, final evaluation). Training stopped by a signal raises :class:`TrainingStopped`
after its checkpoint is saved, so that the command exits non-zero.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from ..utils import comm
from ..utils.errors import FreeSegError
from ..utils.files import file_identity, settings_digest
from .checkpoint import Checkpointer, config_fingerprint, find_checkpoints
from .defaults import (
    amp_dtype,
    build_hooks,
    cfg_get,
    default_setup,
    per_rank_batch_size,
    require_device,
    set_vocabulary,
)
from .launch import create_ddp_model, default_backend, launch
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_grad_clipper, build_optimizer
from .train_loop import NonFiniteLossError, Trainer, TrainingStopped
from .weights import load_checkpoint, load_trained_weights, resolve_weights_path, trained_weights_path

logger = logging.getLogger("freeseg.engine")


def setup(args: Any) -> Any:
    """Config from ``--config-file`` and trailing ``KEY VALUE`` opts, the data sets of
    ``DATASETS.CUSTOM`` registered, checks that fail before
    anything is written (device, batch split, a run in ``OUTPUT_DIR`` that training without
    ``--resume`` would overwrite), then :func:`default_setup`."""
    from ..data.custom import register_from_config

    cfg = load_config(args)
    register_from_config(cfg)  # your own data sets (DATASETS.CUSTOM), before any is looked up
    require_device(str(cfg.MODEL.DEVICE))
    per_rank_batch_size(int(cfg.SOLVER.IMS_PER_BATCH), comm.get_world_size())
    if not args.eval_only and not args.resume:
        refuse_to_overwrite(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    return cfg


def refuse_to_overwrite(output_dir: str) -> None:
    """FreeSegError when ``output_dir`` already holds a training run (checkpoints or a
    ``last_checkpoint`` pointer), which a new run would overwrite."""
    found = find_checkpoints(output_dir)
    if not found and not os.path.isfile(os.path.join(output_dir, "last_checkpoint")):
        return
    if not found:
        held = "a last_checkpoint file"
    elif found[-1].endswith("model_final.pth"):
        held = "a finished run (model_final.pth)"
    else:
        name = os.path.basename(found[-1])
        held = f"a run up to iteration {int(name[len('model_'):-len('.pth')])} ({name})"
    raise FreeSegError(
        f"OUTPUT_DIR {output_dir} already holds {held}; pass --resume to continue it, or pick another "
        "OUTPUT_DIR (or delete that folder) to start over"
    )


def load_config(args: Any) -> Any:
    from ..config import get_cfg

    cfg = get_cfg()
    if getattr(args, "config_file", ""):
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(getattr(args, "opts", []) or []))
    cfg.freeze()
    return cfg


def require_clip(cfg: Any, model: nn.Module, missing: list[str] | None, source: str) -> None:
    """FreeSegError before any iteration or image when ``model``'s frozen CLIP would keep random
    weights: no CLIP file found and the checkpoint ``source`` (``missing``: the model keys it
    lacked; None when nothing was loaded) held none."""
    from ..modeling.clip.build import configured_clip_weights
    from ..modeling.clip.model import require_clip_weights

    if not hasattr(model, "clip_adapter"):
        return
    clip_file, name = configured_clip_weights(cfg)
    require_clip_weights(clip_file, missing, source, name)


def do_test(cfg: Any, model: nn.Module, resume_key: str | None = None) -> dict[str, Any]:
    """Evaluate on every ``DATASETS.TEST`` set; results per set (flattened when there is one).

    With ``resume_key`` (a fingerprint of the weights and settings) each set's evaluation saves
    its progress and continues an interrupted run of the same key (freeseg.evaluation.progress).
    """
    from ..data.loaders import build_test_loader
    from ..evaluation import build_evaluator, inference_on_dataset
    from ..evaluation.progress import EvaluationProgress

    results: dict[str, Any] = {}
    training_vocabulary = getattr(model, "vocabulary", None)
    try:
        for name in cfg.DATASETS.TEST:
            set_vocabulary(model, name)  # each test set brings its own classes and seen flags
            loader = build_test_loader(cfg, name)
            out_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            progress = None
            if resume_key is not None:
                progress = EvaluationProgress(os.path.join(out_dir, f"eval_progress.rank{comm.get_rank()}.pth"),
                                              f"{resume_key} {name} {len(loader)}")
            results[name] = inference_on_dataset(model, loader, build_evaluator(cfg, name, out_dir), progress)
            if comm.is_main_process():  # the evaluators printed their tables; all values are here:
                logger.info("evaluation on %s done: %s", name, os.path.join(out_dir, "results.json"))
    finally:
        if training_vocabulary is not None:  # periodic evaluation: training goes on after it
            model.vocabulary = training_vocabulary
    if len(results) == 1:
        return next(iter(results.values()))
    return results


def evaluation_fingerprint(cfg: Any, weights: str, clip_file: str) -> str:
    """One line that changes with anything that changes an evaluation's results: the config's
    model, input, test sets and test settings (not its device, worker count or output folder),
    the weights and CLIP files (path, size, modification time), the number of processes (each
    evaluates its own share of the images) and this package's version."""
    from .. import __version__

    settings = {
        "config": config_fingerprint(cfg, sections=("MODEL.", "INPUT.", "DATASETS.TEST", "TEST."),
                                     free_keys=("MODEL.WEIGHTS", "MODEL.DEVICE")),
        "weights": file_identity(resolve_weights_path(weights)),
        "clip": file_identity(clip_file) if clip_file and os.path.isfile(clip_file) else clip_file,
        "world_size": comm.get_world_size(), "freeseg": __version__,
    }
    return f"freeseg evaluation {settings_digest(settings)}"


def _maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    if not enabled:
        return model
    logger.info("compiling the model with torch.compile (the first iterations are slow)")
    return torch.compile(model)


def do_train(
    cfg: Any,
    model: nn.Module,
    *,
    resume: bool = False,
    data_loader: Iterable[Any] | None = None,
    eval_fn: Callable[[], Mapping[str, Any]] | None = None,
    log_period: int | None = None,
) -> Trainer:
    """Train ``model`` for ``SOLVER.MAX_ITER`` iterations; returns the finished trainer.

    ``data_loader`` defaults to ``freeseg.data.build_train_loader(cfg)``; ``eval_fn`` to
    :func:`do_test` on the unwrapped model when ``DATASETS.TEST`` is set. Raises
    :class:`FreeSegError` before any iteration for a bad resume or missing weights.
    """
    if len(cfg.DATASETS.TRAIN) > 0:
        set_vocabulary(model, cfg.DATASETS.TRAIN[0])  # FreeSeg trains on the first set's classes
    # Weights first: loading may rebuild submodules (prepare_for_state_dict), and the optimizer
    # and DDP must see the final parameters.
    checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, fingerprint=config_fingerprint(cfg))
    last = checkpointer.last_checkpoint() if resume else None
    resumed = None
    if last is not None:
        resumed = checkpointer.load_model_for_resume(last)  # our own checkpoint: CLIP included
    elif cfg.MODEL.WEIGHTS:
        missing, _ = load_checkpoint(model, cfg.MODEL.WEIGHTS)
        require_clip(cfg, model, missing, cfg.MODEL.WEIGHTS)
    else:
        require_clip(cfg, model, None, "")
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    trained = _maybe_compile(
        create_ddp_model(model, find_unused_parameters=bool(cfg_get(cfg, "SOLVER.DDP_FIND_UNUSED_PARAMETERS", False))),
        bool(cfg_get(cfg, "SOLVER.COMPILE", False)),
    )
    if data_loader is None:
        from ..data.loaders import build_train_loader

        data_loader = build_train_loader(cfg)
    if eval_fn is None and len(cfg.DATASETS.TEST) > 0:
        eval_fn = lambda: do_test(cfg, model)  # noqa: E731
    trainer = Trainer(
        trained, data_loader, optimizer,
        scheduler=scheduler,
        grad_clipper=build_grad_clipper(cfg),
        amp_dtype=amp_dtype(cfg),
        nonfinite=str(cfg_get(cfg, "SOLVER.NONFINITE_LOSS", "stop")),
    )
    # The checkpointer holds the bare model; the trainer the wrapped (DDP / compiled) one.
    checkpointer.optimizer, checkpointer.scheduler, checkpointer.scaler = optimizer, scheduler, trainer.scaler
    start_iter = 0 if resumed is None else checkpointer.restore_training_state(resumed, last)
    trainer.register_hooks(build_hooks(cfg, trainer, checkpointer, eval_fn, log_period))
    try:
        trainer.train(start_iter, int(cfg.SOLVER.MAX_ITER))
    except NonFiniteLossError as e:
        intact = checkpointer.last_saved or last
        where = (f"the last checkpoint, {intact}, is intact: rerun with --resume to continue from it" if intact
                 else "no checkpoint was saved before it: rerun from the start")
        raise NonFiniteLossError(f"{e}; {where}") from None
    if trainer.stopped_early:
        logger.warning("stopped by %s after iteration %d; rerun with --resume to continue",
                       trainer.stop_requested, trainer.iter - 1)
    return trainer


def main(args: Any) -> Any:
    """One process's job: evaluation (``--eval-only``) or training. Returns eval results."""
    from ..modeling import build_model

    cfg = setup(args)
    # checked before the model is built (a minute for FreeSeg's sizes on a CPU)
    weights = trained_weights_path(cfg, "--eval-only") if args.eval_only and not args.resume else None
    model = build_model(cfg)
    logger.info("model %s: %.2fM parameters, %.2fM trainable", type(model).__name__,
                sum(p.numel() for p in model.parameters()) / 1e6,
                sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
    if args.eval_only:
        last = Checkpointer(model, cfg.OUTPUT_DIR).last_checkpoint() if args.resume else None
        source = last or weights or trained_weights_path(cfg, "--eval-only")
        from ..modeling.clip.build import configured_clip_weights

        clip_file, clip_name = configured_clip_weights(cfg)
        # A trained model must fill the whole model (unlike MODEL.WEIGHTS for training, which
        # may be a backbone): evaluating half-random weights would report a wrong score.
        load_trained_weights(model, source, clip_file=clip_file, clip_name=clip_name,
                             config_file=getattr(args, "config_file", ""))
        return do_test(cfg, model, resume_key=evaluation_fingerprint(cfg, source, clip_file))
    trainer = do_train(cfg, model, resume=args.resume)
    if trainer.stopped_early:
        comm.synchronize()  # rank 0 may still be writing the checkpoint
        raise TrainingStopped(str(trainer.stop_requested), trainer.iter - 1)
    return _eval_results(trainer)


def _eval_results(trainer: Trainer) -> Mapping[str, Any]:
    for hook in trainer.hooks:
        if hasattr(hook, "results"):
            return hook.results
    return {}


def run(args: Any) -> Any:
    """Launch :func:`main` on ``--num-gpus`` × ``--num-machines`` processes (or torchrun's).

    The config is read once here first, so that a bad config or a global batch that does not
    divide among the processes fails before any process starts.
    """
    cfg = load_config(args)
    world = int(os.environ.get("WORLD_SIZE", args.num_gpus * args.num_machines))
    per_rank_batch_size(int(cfg.SOLVER.IMS_PER_BATCH), max(world, 1))
    # gloo for CPU processes even on a machine with GPUs; NCCL for GPU ones.
    backend = default_backend(str(cfg.MODEL.DEVICE).startswith("cuda"))
    return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                  dist_url=args.dist_url, args=(args,), backend=backend)


if __name__ == "__main__":
    from ..cli.main import run_command

    sys.exit(run_command("train", sys.argv[1:], prog="python -m freeseg.engine.train_net"))
