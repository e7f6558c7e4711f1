"""Training metrics: an in-memory store and the writers that publish it.

``EventStorage`` keeps every scalar the trainer reports per iteration. Writers read it every
``period`` iterations:
- :class:`JSONWriter` → ``metrics.json``, one JSON object per iteration with new values, the
  keys detectron2 writes (``iteration``, ``total_loss``, ``loss_*``, ``lr``, ``time``,
  ``data_time``, ``eta_seconds``, evaluation results such as ``sem_seg/mIoU``);
- :class:`TensorboardWriter` → TensorBoard event files (``torch.utils.tensorboard``);
- :class:`CommonMetricPrinter` → the progress line in the log;
- :class:`WandbWriter` → Weights & Biases, only when the package is installed.
Values with ``smoothing_hint=True`` (losses, timings) are published as the median over the
last ``window`` iterations, as detectron2 does; others as their latest value.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
from collections import defaultdict, deque
from statistics import median
from typing import Any

import torch

logger = logging.getLogger(__name__)


class EventStorage:
    """Scalars by name, each a bounded history of ``(value, iteration)``."""

    def __init__(self, start_iter: int = 0, max_history: int = 10000) -> None:
        self.iter = start_iter
        self._history: dict[str, deque[tuple[float, int]]] = {}
        self._smoothing: dict[str, bool] = {}
        self._max_history = max_history

    def put_scalar(self, name: str, value: float | torch.Tensor, smoothing_hint: bool = True) -> None:
        """Record ``value`` for the current iteration."""
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        self._history.setdefault(name, deque(maxlen=self._max_history)).append((value, self.iter))
        self._smoothing.setdefault(name, smoothing_hint)

    def put_scalars(self, smoothing_hint: bool = True, **values: float) -> None:
        for name, value in values.items():
            self.put_scalar(name, value, smoothing_hint)

    def history(self, name: str) -> list[float]:
        """All recorded values of ``name`` (oldest first; bounded by ``max_history``)."""
        return [v for v, _ in self._history.get(name, ())]

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (latest value, its iteration)}``."""
        return {k: h[-1] for k, h in self._history.items() if h}

    def median(self, name: str, window: int) -> float:
        return median(v for v, _ in list(self._history[name])[-window:])

    def avg(self, name: str, window: int) -> float:
        values = [v for v, _ in list(self._history[name])[-window:]]
        return sum(values) / len(values)

    def latest_with_smoothing_hint(self, window: int = 20) -> dict[str, tuple[float, int]]:
        """Latest values, with smoothed names replaced by their median over ``window``."""
        out = {}
        for name, (value, it) in self.latest().items():
            out[name] = (self.median(name, window) if self._smoothing[name] else value, it)
        return out

    def step(self) -> None:
        self.iter += 1


class EventWriter:
    """Publishes what is new in an :class:`EventStorage` each time :meth:`write` is called."""

    window = 20

    def write(self, storage: EventStorage) -> None:
        raise NotImplementedError

    def _new_values(self, storage: EventStorage) -> dict[int, dict[str, float]]:
        """``{iteration: {name: value}}`` for values not published yet by this writer.

        Tracked per name (not one "last iteration written"), so evaluation results recorded at
        an iteration whose losses were already written still get published.
        """
        written: dict[str, int] = self.__dict__.setdefault("_written", {})
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, it) in storage.latest_with_smoothing_hint(self.window).items():
            if it > written.get(name, -1):
                by_iter[it][name] = value
                written[name] = it
        return dict(sorted(by_iter.items()))

    def close(self) -> None:
        pass


class JSONWriter(EventWriter):
    """Appends one JSON object per iteration that has new values to ``path``."""

    def __init__(self, path: str, window: int = 20) -> None:
        self._file = open(path, "a")
        self.window = window

    def write(self, storage: EventStorage) -> None:
        by_iter = self._new_values(storage)
        for it, values in by_iter.items():
            self._file.write(json.dumps({"iteration": it, **values}, sort_keys=True) + "\n")
        if by_iter:
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorboardWriter(EventWriter):
    """Scalars into TensorBoard event files under ``log_dir``."""

    def __init__(self, log_dir: str, window: int = 20) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)
        self.window = window

    def write(self, storage: EventStorage) -> None:
        for it, values in self._new_values(storage).items():
            for name, value in values.items():
                self._writer.add_scalar(name, value, it)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbWriter(EventWriter):
    """Scalars to Weights & Biases (``wandb`` must be installed; the caller checks)."""

    def __init__(self, project: str, name: str | None, config: dict[str, Any], window: int = 20) -> None:
        import wandb

        self._wandb = wandb
        self._run = wandb.init(project=project, name=name, config=config)
        self.window = window

    def write(self, storage: EventStorage) -> None:
        for it, values in self._new_values(storage).items():
            self._run.log(values, step=it)

    def close(self) -> None:
        self._run.finish()


class CommonMetricPrinter(EventWriter):
    """The progress line: ETA, iteration, losses, time/iter, data time, LR, peak memory."""

    def __init__(self, max_iter: int, window: int = 20) -> None:
        self._max_iter = max_iter
        self.window = window
        self._last_printed = -1

    def write(self, storage: EventStorage) -> None:
        latest = storage.latest()
        if "total_loss" not in latest:
            return
        it = latest["total_loss"][1]
        if it <= self._last_printed:
            return
        self._last_printed = it
        losses = "  ".join(
            f"{k}: {storage.median(k, self.window):.4g}"
            for k in sorted(latest)
            if (k.startswith("loss") or k == "total_loss") and latest[k][1] == it
        )
        parts = []
        if "eta_seconds" in latest:
            parts.append(f"eta: {datetime.timedelta(seconds=int(latest['eta_seconds'][0]))}")
        parts.append(f"iter: {it + 1}/{self._max_iter}")
        parts.append(losses)
        for key, label in (("time", "time"), ("data_time", "data_time")):
            if key in latest:
                parts.append(f"{label}: {storage.avg(key, self.window):.4f}")
        if "lr" in latest:
            parts.append(f"lr: {latest['lr'][0]:.3g}")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 2**20:.0f}M")
        logging.getLogger("freeseg.engine").info("  ".join(parts))


def default_writers(output_dir: str, max_iter: int, wandb_cfg: dict[str, Any] | None = None) -> list[EventWriter]:
    """Printer, ``metrics.json`` and TensorBoard writers (plus W&B if asked and installed)."""
    os.makedirs(output_dir, exist_ok=True)
    writers: list[EventWriter] = [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardWriter(output_dir),
    ]
    if wandb_cfg is not None:
        try:
            writers.append(WandbWriter(**wandb_cfg))
        except ImportError:
            logger.warning("WANDB.ENABLED is set but wandb is not installed; not logging to W&B")
    return writers
