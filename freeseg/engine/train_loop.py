"""The training loop: data → model → loss → backward → step; everything else is a hook.

One iteration (:meth:`Trainer.run_step`):
1. ``batch = next(loader)`` (list of per-image dicts, architecture contract);
2. ``loss_dict = model(batch)`` under autocast when AMP is on;
3. the losses (and a "please stop" flag from the signal handler) are summed over ranks in
   one ``all_reduce``, so every rank sees the same numbers and takes the same decision;
4. a non-finite total stops the run (``nonfinite="stop"``) or skips the update
   (``"skip"``, counted in ``nonfinite_skips``) on every rank;
5. backward (through the fp16 ``GradScaler`` if any), gradient clipping, optimizer step,
   LR scheduler step.
Hooks see the trainer (``trainer.iter``, ``trainer.storage``, ...) before and after each step
and around the whole run.
"""
from __future__ import annotations

import logging
import signal
import time
import warnings
import weakref
from contextlib import nullcontext
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..utils import comm
from ..utils.errors import FreeSegError
from ..utils.events import EventStorage

logger = logging.getLogger(__name__)


class NonFiniteLossError(FreeSegError):
    """A loss became NaN or infinite (and ``SOLVER.NONFINITE_LOSS`` is ``stop``)."""


class TrainingStopped(FreeSegError):
    """Training stopped early on request (a signal) after saving a checkpoint.

    ``exit_status`` is what the command line exits with: 128 + the signal's number, as shells
    report a job a signal ended (130 for SIGINT), so that ``train && eval`` does not go on.
    """

    def __init__(self, reason: str, iteration: int) -> None:
        super().__init__(f"stopped by {reason} after iteration {iteration}; rerun with --resume to continue")
        self.reason, self.iteration = reason, iteration
        sig = signal.Signals.__members__.get(reason)  # None: "stop requested on another rank"
        self.exit_status = 128 + int(sig if sig is not None else signal.SIGINT)


class HookBase:
    """Called by :class:`Trainer` around the run and each iteration; ``self.trainer`` is set."""

    trainer: "Trainer"

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...


class Trainer:
    """Minimal trainer for models that return a loss dict in training mode.

    Args:
        model: takes ``list[dict]``, returns ``dict[str, Tensor]`` of weighted scalar losses.
        data_loader: an iterable of batches (infinite, or re-iterated when exhausted).
        optimizer: built over the trainable parameters.
        scheduler: stepped once per iteration after the optimizer (``None``: constant LR).
        grad_clipper: ``callable(param_groups) -> total_norm | None`` run before the step.
        amp_dtype: ``torch.float16`` (with a ``GradScaler``) or ``torch.bfloat16``; None = fp32.
        nonfinite: ``"stop"`` or ``"skip"``, what to do with a NaN/inf loss.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        grad_clipper: Callable[[list[dict[str, Any]]], torch.Tensor | None] | None = None,
        amp_dtype: torch.dtype | None = None,
        nonfinite: str = "stop",
    ) -> None:
        if nonfinite not in ("stop", "skip"):
            raise FreeSegError(f"SOLVER.NONFINITE_LOSS={nonfinite!r} is unknown; use 'stop' or 'skip'")
        self.model, self.data_loader, self.optimizer = model, data_loader, optimizer
        self.scheduler, self.grad_clipper = scheduler, grad_clipper
        self.amp_dtype, self.nonfinite = amp_dtype, nonfinite
        self.device_type = next(model.parameters()).device.type
        fp16 = amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=fp16) if fp16 else None
        self.hooks: list[HookBase] = []
        self.iter = self.start_iter = self.max_iter = 0
        self.storage = EventStorage()
        # ``request_stop`` (signal handlers) sets the raw flag; ``stop_requested`` is set only
        # once all ranks know (after the next all-reduce), so every rank stops at the same step.
        self._stop_signal: str | None = None
        self.stop_requested: str | None = None
        self.stopped_early = False
        self.nonfinite_skips = 0
        self._data_iter: Iterator[Any] | None = None

    def request_stop(self, reason: str) -> None:
        """Stop after the next iteration (every rank agrees on which), saving a checkpoint."""
        self._stop_signal = reason

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        for hook in hooks:
            if hook is None:
                continue
            hook.trainer = weakref.proxy(self)  # hooks must not keep the trainer alive
            self.hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1`` (fewer if a stop is requested)."""
        self.start_iter, self.max_iter = start_iter, max_iter
        self.iter = start_iter
        self.storage = EventStorage(start_iter)
        logger.info("starting training from iteration %d of %d", start_iter, max_iter)
        self.model.train()
        try:
            for h in self.hooks:
                h.before_train()
            self._data_iter = self._start_data(start_iter)
            for self.iter in range(start_iter, max_iter):
                for h in self.hooks:
                    h.before_step()
                self.run_step()
                for h in self.hooks:
                    h.after_step()
                self.storage.step()
                if self.stop_requested:
                    self.stopped_early = self.iter + 1 < max_iter
                    break
            self.iter += 1
        finally:
            for h in self.hooks:
                h.after_train()

    def _start_data(self, start_iter: int) -> Iterator[Any]:
        # Exact resume needs the loader to continue where it stopped; a loader that can skip
        # ahead cheaply (without loading the skipped images) offers ``set_start_iter``.
        if start_iter > 0:
            if hasattr(self.data_loader, "set_start_iter"):
                self.data_loader.set_start_iter(start_iter)
            else:
                logger.warning("the data loader cannot skip to iteration %d; its order restarts", start_iter)
        return iter(self.data_loader)

    def _next_batch(self) -> Any:
        assert self._data_iter is not None
        try:
            return next(self._data_iter)
        except StopIteration:  # a finite loader: start another pass
            self._data_iter = iter(self.data_loader)
            return next(self._data_iter)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def run_step(self) -> None:
        start = time.perf_counter()
        batch = self._next_batch()
        data_time = time.perf_counter() - start
        with self._autocast():
            loss_dict = self.model(batch)
        if not isinstance(loss_dict, dict) or not loss_dict:
            raise FreeSegError(
                f"{type(self.model).__name__} returned {type(loss_dict).__name__} in training mode; "
                "models must return a non-empty dict of losses"
            )
        losses = sum(loss_dict.values())
        reduced = self._reduce(loss_dict)
        total = sum(reduced.values())
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(torch.as_tensor(total)):
            self._on_nonfinite(reduced)
        else:
            self._backward_and_step(losses)
            self.storage.put_scalar("total_loss", total)
            for name, value in reduced.items():
                self.storage.put_scalar(name, value)
        self.storage.put_scalar("data_time", data_time)
        self.storage.put_scalar("lr", self._main_lr(), smoothing_hint=False)
        if self.scheduler is not None:
            with warnings.catch_warnings():
                # The LR follows the iteration even when an update was skipped (non-finite
                # loss, or the fp16 scaler skipping an overflow): PyTorch's order warning
                # does not apply.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                self.scheduler.step()

    def _backward_and_step(self, losses: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(losses).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            losses.backward()
        if self.grad_clipper is not None:
            norm = self.grad_clipper(self.optimizer.param_groups)
            if norm is not None:
                self.storage.put_scalar("grad_norm", norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def _reduce(self, loss_dict: dict[str, torch.Tensor]) -> dict[str, float]:
        """Losses averaged over ranks, as floats; also shares the stop flag (one collective)."""
        names = sorted(loss_dict)
        values = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names])
        flag = torch.tensor([1.0 if self._stop_signal else 0.0], device=values.device)
        packed = torch.cat([values, flag])
        if comm.get_world_size() > 1:
            dist.all_reduce(packed)
            packed[:-1] /= comm.get_world_size()
        packed = packed.cpu()
        if packed[-1] > 0:
            self.stop_requested = self._stop_signal or "stop requested on another rank"
        return {k: float(v) for k, v in zip(names, packed[:-1])}

    def _on_nonfinite(self, reduced: dict[str, float]) -> None:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in reduced.items() if not torch.isfinite(torch.tensor(v)))
        if self.nonfinite == "stop":
            raise NonFiniteLossError(
                f"non-finite loss at iteration {self.iter} ({terms}): lower SOLVER.BASE_LR or enable "
                "SOLVER.CLIP_GRADIENTS, or set SOLVER.NONFINITE_LOSS skip"
            )
        self.nonfinite_skips += 1
        logger.warning("iteration %d: non-finite loss (%s), update skipped (%d so far)",
                       self.iter, terms, self.nonfinite_skips)
        self.storage.put_scalar("nonfinite_skips", self.nonfinite_skips, smoothing_hint=False)

    def _main_lr(self) -> float:
        # The largest LR is BASE_LR x schedule: the one people mean (not the backbone's x0.1).
        return max(float(g["lr"]) for g in self.optimizer.param_groups)
