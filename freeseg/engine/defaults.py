"""Run set-up shared by training and evaluation: output folder, logs, seeds, determinism,
batch split, AMP dtype, and the standard hook list."""
from __future__ import annotations

import logging
import os
import random
import sys
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..utils import comm
from ..utils.errors import ConfigError, FreeSegError
from ..utils.events import default_writers
from ..utils.logger import setup_logger
from .checkpoint import Checkpointer
from .hooks import EvalHook, IterationTimer, PeriodicCheckpointer, PeriodicWriter, SignalHandler
from .train_loop import HookBase, Trainer

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def cfg_get(cfg: Any, key: str, default: Any) -> Any:
    """``cfg.A.B.C`` or ``default`` when a key is absent (keys proposed but not yet defined)."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def seed_all_rng(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels where PyTorch has them (a warning where it does not)."""
    if enabled:
        # cuBLAS needs this before its first use to be reproducible.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    """``SOLVER.IMS_PER_BATCH`` is the global batch; each process gets an equal share."""
    if global_batch <= 0:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH must be positive (the total batch over all processes), got {global_batch}"
        )
    if global_batch % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH={global_batch} does not divide among {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    return global_batch // world_size


def amp_dtype(cfg: Any) -> torch.dtype | None:
    """The autocast dtype, or None when ``SOLVER.AMP.ENABLED`` is off."""
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    name = str(cfg_get(cfg, "SOLVER.AMP.DTYPE", "float16"))
    if name not in _AMP_DTYPES:
        raise ConfigError(f"SOLVER.AMP.DTYPE={name!r} is unknown; use 'float16' or 'bfloat16'")
    return _AMP_DTYPES[name]


def default_setup(cfg: Any, args: Any = None) -> None:
    """Create ``OUTPUT_DIR``, set up logging, dump the merged config, seed, set determinism.

    Seeds are ``SEED + rank`` (FreeSeg samples one task per iteration per process, so ranks
    must differ); a negative ``SEED`` draws one at random (the same base on every rank).
    """
    rank = comm.get_rank()
    out = cfg.OUTPUT_DIR
    if rank == 0 and out:
        os.makedirs(out, exist_ok=True)
    comm.synchronize()
    setup_logger(out or None, rank=rank)
    logger.info("rank %d of %d; python %s; torch %s", rank, comm.get_world_size(),
                sys.version.split()[0], torch.__version__)
    if args is not None:
        logger.info("command line arguments: %s", args)
    if rank == 0 and out:
        path = os.path.join(out, "config.yaml")
        with open(path, "w") as f:
            f.write(cfg.dump())
        logger.info("full config saved to %s", path)
    seed = int(cfg.SEED)
    if seed < 0:
        seed = comm.shared_random_seed()
    seed_all_rng(seed + rank)
    set_deterministic(bool(cfg_get(cfg, "SOLVER.DETERMINISTIC", False)))
    if not cfg_get(cfg, "SOLVER.DETERMINISTIC", False):
        torch.backends.cudnn.benchmark = bool(cfg_get(cfg, "CUDNN_BENCHMARK", False))


def build_hooks(
    cfg: Any,
    trainer: Trainer,
    checkpointer: Checkpointer,
    eval_fn: Callable[[], Mapping[str, Any]] | None,
    log_period: int | None = None,
) -> list[HookBase]:
    """Timer, checkpoints, evaluation, writers (main process) and signal handling."""
    period = log_period or int(cfg_get(cfg, "SOLVER.LOG_PERIOD", 20))
    hooks: list[HookBase] = [
        IterationTimer(),
        PeriodicCheckpointer(checkpointer, int(cfg.SOLVER.CHECKPOINT_PERIOD)),
    ]
    if eval_fn is not None:
        hooks.append(EvalHook(int(cfg.TEST.EVAL_PERIOD), eval_fn))
    if comm.is_main_process():
        wandb = None
        if cfg_get(cfg, "WANDB.ENABLED", False):
            wandb = {"project": cfg.WANDB.PROJECT, "name": cfg.WANDB.NAME, "config": cfg.to_dict()}
        hooks.append(PeriodicWriter(default_writers(cfg.OUTPUT_DIR, int(cfg.SOLVER.MAX_ITER), wandb), period))
    hooks.append(SignalHandler())
    return hooks


def vocabulary_from_metadata(dataset_name: str) -> dict[str, Any]:
    """``set_vocabulary`` arguments from a registered data set's metadata: ``class_names`` (all
    names, contiguous order), ``trainable_flag`` (1 = seen; None if absent) and ``thing_flags``
    (from ``thing_classes``; None if absent)."""
    from ..data.catalog import MetadataCatalog

    meta = MetadataCatalog.get(dataset_name)
    names = list(meta.get("stuff_classes") or [])
    if not names:
        raise FreeSegError(f"data set '{dataset_name}' has no class names (stuff_classes) in its metadata; register them")
    things = meta.get("thing_classes")
    flag = meta.get("trainable_flag")
    return {
        "class_names": names,
        "trainable_flag": None if flag is None else list(flag),
        "thing_flags": None if things is None else [int(n in set(things)) for n in names],
    }


def set_vocabulary(model: Any, dataset_name: str) -> None:
    """Point a model with ``set_vocabulary`` (both FreeSeg stages) at a data set's classes."""
    if hasattr(model, "set_vocabulary"):
        model.set_vocabulary(**vocabulary_from_metadata(dataset_name))


def require_device(name: str) -> None:
    """ConfigError unless ``MODEL.DEVICE`` (``name``) is ``cpu`` or a CUDA device usable here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"MODEL.DEVICE {name!r} is not a device; use cpu or cuda (cuda:N for GPU N)")
    if device.type == "cpu":
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            f"MODEL.DEVICE {name}, but no CUDA GPU is usable here; add 'MODEL.DEVICE cpu' to run on the CPU"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"MODEL.DEVICE {name} but only {torch.cuda.device_count()} GPUs are visible; use cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}, or cuda (with --num-gpus for several)"
        )
