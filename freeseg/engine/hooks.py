"""Hooks: timing, checkpoints, evaluation, metric writers and signal handling.

Order matters: register ``IterationTimer`` first (it times the step), then the checkpointer,
then evaluation (its results go into the storage), then ``PeriodicWriter`` (publishes them).
"""
from __future__ import annotations

import logging
import signal
import time
from typing import Any, Callable, Mapping

from ..utils import comm
from ..utils.events import EventWriter
from .checkpoint import Checkpointer
from .train_loop import HookBase

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Records ``time`` (seconds per iteration) and ``eta_seconds``."""

    def __init__(self, warmup_iters: int = 3) -> None:
        self._warmup = warmup_iters  # the first iterations (allocations, caches) skew the ETA
        self._start = 0.0
        self._times: list[float] = []

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        elapsed = time.perf_counter() - self._start
        done = self.trainer.iter - self.trainer.start_iter + 1
        if done > self._warmup:
            self._times.append(elapsed)
        self.trainer.storage.put_scalar("time", elapsed)
        recent = self._times[-20:] or [elapsed]
        remaining = self.trainer.max_iter - self.trainer.iter - 1
        self.trainer.storage.put_scalar("eta_seconds", remaining * sum(recent) / len(recent),
                                        smoothing_hint=False)

    def after_train(self) -> None:
        total = time.perf_counter() - self._train_start
        done = self.trainer.iter - self.trainer.start_iter
        if done > 0:
            logger.info("total training time %.1f s (%.4f s/it over %d iterations)", total, total / done, done)


class PeriodicCheckpointer(HookBase):
    """Saves ``model_{iter:07d}`` every ``period`` iterations, ``model_final`` at the end, and a
    checkpoint of the iteration just finished when a stop was requested (signal)."""

    def __init__(self, checkpointer: Checkpointer, period: int) -> None:
        self.checkpointer, self.period = checkpointer, period
        self.last_saved: str | None = None

    def after_step(self) -> None:
        it, max_iter = self.trainer.iter, self.trainer.max_iter
        if it + 1 >= max_iter:
            self.last_saved = self.checkpointer.save("model_final", it)
        elif (self.period > 0 and (it + 1) % self.period == 0) or self.trainer.stop_requested:
            self.last_saved = self.checkpointer.save(f"model_{it:07d}", it)


class EvalHook(HookBase):
    """Runs ``eval_fn()`` every ``period`` iterations and after the last one.

    ``eval_fn`` returns detectron2-style nested results (``{"sem_seg": {"mIoU": ...}}``) on the
    main process and ``{}`` elsewhere; they are stored as ``sem_seg/mIoU`` scalars.
    """

    def __init__(self, period: int, eval_fn: Callable[[], Mapping[str, Any]]) -> None:
        self.period, self.eval_fn = period, eval_fn
        self.results: Mapping[str, Any] = {}

    def _evaluate(self) -> None:
        model = self.trainer.model
        self.results = self.eval_fn() or {}
        model.train()  # eval_fn switches the model to eval mode
        for name, value in _flatten_results(self.results).items():
            self.trainer.storage.put_scalar(name, value, smoothing_hint=False)
        comm.synchronize()

    def after_step(self) -> None:
        it = self.trainer.iter
        if self.period > 0 and (it + 1) % self.period == 0 and it + 1 < self.trainer.max_iter:
            self._evaluate()

    def after_train(self) -> None:
        # Final evaluation only after a complete run (not after a crash or an interruption).
        if self.trainer.iter >= self.trainer.max_iter and not self.trainer.stopped_early:
            self.trainer.storage.iter = self.trainer.max_iter - 1
            self._evaluate()


def _flatten_results(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten_results(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class PeriodicWriter(HookBase):
    """Calls every writer each ``period`` iterations, after the last one, and at the end."""

    def __init__(self, writers: list[EventWriter], period: int = 20) -> None:
        self.writers, self.period = writers, period

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it + 1 == self.trainer.max_iter or self.trainer.stop_requested:
            for writer in self.writers:
                writer.write(self.trainer.storage)

    def after_train(self) -> None:
        for writer in self.writers:
            writer.write(self.trainer.storage)
            writer.close()


class SignalHandler(HookBase):
    """SIGTERM / SIGINT ask the trainer to stop after the current iteration (a checkpoint is
    then saved by :class:`PeriodicCheckpointer`); a second SIGINT interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.trainer._stop_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        logger.warning("%s received: saving a checkpoint after the next iteration, then stopping", name)
        self.trainer.request_stop(name)

    def before_train(self) -> None:
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals to whoever owns them
            self._previous.clear()

    def after_train(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
