"""Training checkpoints that survive crashes, and exact resume.

A checkpoint ``model_XXXXXXX.pth`` (or ``model_final.pth``) is a dict loadable with
``torch.load(weights_only=True)``:

``model`` (state dict, never DDP-prefixed), ``optimizer``, ``scheduler``, ``scaler`` (AMP, or
absent), ``iteration`` (index of the last finished iteration), ``rng`` (one entry per rank:
python / numpy / torch / cuda generator states, and those of ``random.Random`` / numpy
``Generator`` attributes of the model's modules), ``config`` (the flattened training-identity
config, see :func:`config_fingerprint`), ``world_size``.

Files are written to a temporary name and renamed (``os.replace`` is atomic on POSIX), so a
crash mid-write never leaves a truncated checkpoint; ``last_checkpoint`` (a text file with the
file name) is replaced the same way and only after the checkpoint itself is complete. Without that
pointer, ``--resume`` continues from the newest checkpoint in the folder.
"""
from __future__ import annotations

import logging
import os
import random
import re
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..utils import comm
from ..utils.errors import FreeSegError
from ..utils.files import atomic_write
from .weights import UnreadableWeightsError, load_checkpoint, load_state_dict_checked, read_weights_file

__all__ = ["Checkpointer", "load_checkpoint", "config_fingerprint", "atomic_save", "find_checkpoints"]

logger = logging.getLogger(__name__)

# Keys that may change between a run and its resume without changing what is computed.
_RESUME_FREE_KEYS = ("MODEL.WEIGHTS", "MODEL.DEVICE", "SOLVER.CHECKPOINT_PERIOD")
_IDENTITY_SECTIONS = ("MODEL.", "SOLVER.", "INPUT.", "DATASETS.TRAIN", "SEED")
_CHECKPOINT_NAME = re.compile(r"model_(\d{7}|final)\.pth")  # what PeriodicCheckpointer writes


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_fingerprint(
    cfg: Mapping[str, Any],
    sections: tuple[str, ...] = _IDENTITY_SECTIONS,
    free_keys: tuple[str, ...] = _RESUME_FREE_KEYS,
) -> dict[str, str]:
    """The config values that define a run: by default a training run's (model, solver, input,
    train sets, seed), the keys under ``sections`` but ``free_keys``."""
    flat = _flatten(cfg)
    return {k: repr(v) for k, v in sorted(flat.items()) if k.startswith(sections) and k not in free_keys}


def _private_generators(model: nn.Module | None) -> dict[str, Any]:
    """``{"module.attr": generator}`` for ``random.Random`` / numpy ``Generator`` attributes.

    Models may keep their own generator (``OpenVocabulary`` draws its per-iteration task from
    one); exact resume needs their states as much as the global ones.
    """
    found: dict[str, Any] = {}
    if model is None:
        return found
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, (random.Random, np.random.Generator)):
                found[f"{name}.{attr}" if name else attr] = value
    return found


def get_rng_state(model: nn.Module | None = None) -> dict[str, Any]:
    """This process's generator states, as tensors and builtins (``weights_only``-loadable),
    including generators that ``model``'s modules hold as attributes."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    modules = {}
    for key, gen in _private_generators(model).items():
        modules[key] = gen.getstate() if isinstance(gen, random.Random) else gen.bit_generator.state
    if modules:
        state["modules"] = modules
    return state


def set_rng_state(state: Mapping[str, Any], model: nn.Module | None = None) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("modules", {})
    for key, gen in _private_generators(model).items():
        if key not in saved:
            continue
        if isinstance(gen, random.Random):
            version, internal, gauss = saved[key]
            gen.setstate((version, tuple(internal), gauss))
        else:
            gen.bit_generator.state = saved[key]


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def _atomic_write_text(text: str, path: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def find_checkpoints(save_dir: str) -> list[str]:
    """The checkpoints (``model_XXXXXXX.pth``, ``model_final.pth``) in ``save_dir``, oldest first
    (by modification time; the name breaks ties)."""
    if not os.path.isdir(save_dir):
        return []
    paths = [os.path.join(save_dir, n) for n in os.listdir(save_dir) if _CHECKPOINT_NAME.fullmatch(n)]
    return sorted(paths, key=lambda p: (os.path.getmtime(p), p))


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP and ``torch.compile`` wrappers (in either order)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class Checkpointer:
    """Saves and resumes the full training state in ``save_dir``.

    :meth:`save` is collective (every rank calls it: RNG states are gathered); rank 0 writes.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scaler: torch.amp.GradScaler | None = None,
        fingerprint: dict[str, str] | None = None,
    ) -> None:
        self.model = model
        self.save_dir = save_dir
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.fingerprint = fingerprint or {}
        self.last_saved: str | None = None  # the last checkpoint this run saved

    @property
    def _pointer(self) -> str:
        return os.path.join(self.save_dir, "last_checkpoint")

    def save(self, name: str, iteration: int) -> str:
        """Write ``<save_dir>/<name>.pth`` and point ``last_checkpoint`` at it; returns the path."""
        rng = comm.all_gather(get_rng_state(_unwrap(self.model)))
        path = os.path.join(self.save_dir, f"{name}.pth")
        if not comm.is_main_process():
            self.last_saved = path
            return path
        data: dict[str, Any] = {
            "model": _unwrap(self.model).state_dict(),
            "iteration": iteration,
            "rng": rng,
            "config": self.fingerprint,
            "world_size": comm.get_world_size(),
        }
        if self.optimizer is not None:
            data["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            data["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None and self.scaler.is_enabled():
            data["scaler"] = self.scaler.state_dict()
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_save(data, path)
        _atomic_write_text(os.path.basename(path), self._pointer)
        self.last_saved = path
        logger.info("saved checkpoint %s (iteration %d)", path, iteration)
        return path

    def last_checkpoint(self) -> str | None:
        """The checkpoint to resume from: the file ``last_checkpoint`` names or, when there is no
        such pointer, the newest checkpoint in ``save_dir`` (logged); None when there is none."""
        found = find_checkpoints(self.save_dir)
        if not os.path.isfile(self._pointer):
            if found:
                logger.warning("%s has no last_checkpoint file: using the newest checkpoint there, %s",
                               self.save_dir, os.path.basename(found[-1]))
                return found[-1]
            return None
        with open(self._pointer) as f:
            name = f.read().strip()
        if found:
            newest = os.path.basename(found[-1])
            fix = (f"delete {self._pointer} and rerun with --resume to continue from the newest checkpoint "
                   f"there, {newest}")
        else:
            fix = f"delete {self._pointer} to start over (no checkpoint is in {self.save_dir})"
        if not name:
            raise FreeSegError(f"{self._pointer} is empty instead of naming a checkpoint; {fix}")
        path = os.path.join(self.save_dir, name)
        if not os.path.isfile(path):
            raise FreeSegError(f"{self._pointer} names {name}, which does not exist; restore that file, or {fix}")
        return path

    def resume(self, path: str) -> int:
        """Restore everything from our checkpoint ``path``; returns the next iteration to run."""
        return self.restore_training_state(self.load_model_for_resume(path), path)

    def load_model_for_resume(self, path: str) -> dict[str, Any]:
        """First half of :meth:`resume`: check the config, load the model; returns the data.

        Split so that the optimizer and DDP can be built after the model has its final
        parameters (a ``prepare_for_state_dict`` hook may rebuild submodules).
        """
        try:
            data = read_weights_file(path)
        except UnreadableWeightsError as e:
            raise FreeSegError(f"--resume: {path} {e.problem}; {self._without(path)}") from None
        if "iteration" not in data or "model" not in data:
            raise FreeSegError(f"{path} is not a freeseg training checkpoint; use MODEL.WEIGHTS for weights")
        self._check_config(data.get("config", {}), path)
        missing, unexpected = load_state_dict_checked(_unwrap(self.model), data["model"], path)
        if missing or unexpected:
            raise FreeSegError(
                f"checkpoint {path} has a different model ({len(missing)} missing, "
                f"{len(unexpected)} unexpected keys, e.g. {(missing + unexpected)[0]}); "
                "resume only with the config that wrote it"
            )
        return data

    def _without(self, path: str) -> str:
        """How to go on when the checkpoint ``path`` cannot be used: from an older one, or afresh."""
        older = [p for p in find_checkpoints(self.save_dir) if not os.path.samefile(p, path)]
        delete = f"delete {path}" + (f" and {self._pointer}" if os.path.isfile(self._pointer) else "")
        if older:
            return f"an older checkpoint is there: {delete}, then rerun with --resume to continue from {older[-1]}"
        return (f"no older checkpoint is in {self.save_dir}: restore the file, or start over in a new "
                "OUTPUT_DIR (or delete this one)")

    def restore_training_state(self, data: Mapping[str, Any], path: str) -> int:
        """Second half of :meth:`resume`: optimizer, scheduler, scaler and generators."""
        try:
            if self.optimizer is not None and "optimizer" in data:
                self.optimizer.load_state_dict(data["optimizer"])
        except ValueError as e:
            raise FreeSegError(f"optimizer state in {path} does not fit this model ({e}); resume with the same config") from None
        if self.scheduler is not None and "scheduler" in data:
            self.scheduler.load_state_dict(data["scheduler"])
        if self.scaler is not None and "scaler" in data:
            self.scaler.load_state_dict(data["scaler"])
        self._restore_rng(data.get("rng", []), path)
        logger.info("resumed from %s at iteration %d", path, data["iteration"] + 1)
        return int(data["iteration"]) + 1

    def _check_config(self, saved: Mapping[str, str], path: str) -> None:
        if not saved or not self.fingerprint:
            return
        keys = sorted(set(saved) | set(self.fingerprint))
        diff = [k for k in keys if saved.get(k) != self.fingerprint.get(k)]
        if diff:
            shown = ", ".join(f"{k}: {saved.get(k, '<absent>')} -> {self.fingerprint.get(k, '<absent>')}" for k in diff[:4])
            more = f" (+{len(diff) - 4} more)" if len(diff) > 4 else ""
            raise FreeSegError(
                f"--resume: {path} was written with another config ({shown}{more}); "
                "use a new OUTPUT_DIR, or drop --resume and start from MODEL.WEIGHTS"
            )

    def _restore_rng(self, states: list[Any], path: str) -> None:
        rank = comm.get_rank()
        if len(states) != comm.get_world_size():
            logger.warning("%s was written by %d processes, now %d: random streams are not restored "
                           "exactly", path, len(states), comm.get_world_size())
        if rank < len(states):
            set_rng_state(states[rank], _unwrap(self.model))
