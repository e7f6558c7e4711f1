"""The evaluator protocol (detectron2's ``reset / process / evaluate``) and the inference loop.

An evaluator sees the model's inputs and outputs batch by batch (``process``), keeps what it
needs (a confusion matrix, per-image PQ counts, RLE-encoded masks), and turns it into metrics in
``evaluate``. Under ``torch.distributed`` every rank processes its share of the data; evaluate
gathers the kept state on rank 0 (through :mod:`freeseg.utils.comm`), which computes the metrics;
the other ranks return ``{}``.
"""
from __future__ import annotations

import datetime
import logging
import os
import signal
import time
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, NoReturn, Sequence

import torch
from torch import nn

from ..utils import comm
from ..utils.errors import FreeSegError
from .report import save_results_json

if TYPE_CHECKING:
    from .progress import EvaluationProgress

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Base class: accumulate predictions over a data set, then compute metrics.

    Subclasses implement :meth:`reset`, :meth:`process` and :meth:`evaluate`. ``evaluate`` returns
    ``{family: {metric: value}}`` (e.g. ``{"sem_seg": {"mIoU": 42.0}}``) on the main process and
    ``{}`` elsewhere.
    """

    def reset(self) -> None:
        """Forget everything processed so far (called before each inference pass)."""

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Consume one batch: ``inputs`` as given to the model, ``outputs`` as it returned them."""

    def evaluate(self) -> dict[str, dict[str, Any]]:
        """Metrics over everything processed (main process), ``{}`` on other ranks."""
        return {}

    #: the attributes in which ``process`` accumulates (all of them): their values are what
    #: :mod:`.progress` saves so that an interrupted evaluation continues; None: not resumable
    state_attributes: tuple[str, ...] | None = None

    def state_dict(self) -> dict[str, Any] | None:
        """What ``process`` has accumulated (picklable), or None if this evaluator cannot
        resume."""
        if self.state_attributes is None:
            return None
        return {name: getattr(self, name) for name in self.state_attributes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (after :meth:`reset`)."""
        if set(state) != set(self.state_attributes or ()):
            raise FreeSegError(f"{type(self).__name__} cannot load a saved state with keys {sorted(state)}")
        for name, value in state.items():
            setattr(self, name, value)


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one; their result families are merged.

    With ``output_dir`` the merged results are also written to ``output_dir/results.json`` (main
    process only).
    """

    def __init__(self, evaluators: Sequence[DatasetEvaluator], output_dir: str | None = None):
        super().__init__()
        self._evaluators = list(evaluators)
        self._output_dir = output_dir

    @property
    def evaluators(self) -> list[DatasetEvaluator]:
        return list(self._evaluators)

    def reset(self) -> None:
        for e in self._evaluators:
            e.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for e in self._evaluators:
            e.process(inputs, outputs)

    def state_dict(self) -> list[Any] | None:
        states = [e.state_dict() for e in self._evaluators]
        return None if any(st is None for st in states) else states

    def load_state_dict(self, state: Sequence[Any]) -> None:
        if len(state) != len(self._evaluators):
            raise FreeSegError(f"a saved state of {len(state)} evaluators cannot be loaded into {len(self._evaluators)}")
        for e, st in zip(self._evaluators, state):
            e.load_state_dict(st)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        for e in self._evaluators:
            for family, metrics in (e.evaluate() or {}).items():
                if family in results:
                    raise FreeSegError(
                        f"two evaluators both report '{family}'; give each family to one evaluator"
                    )
                results[family] = metrics
        if self._output_dir and comm.is_main_process() and results:
            save_results_json(results, self._output_dir)
        return results


@contextmanager
def _inference_context(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then the previous mode back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _progress(loader: Iterable, total: int | None) -> Iterable:
    """A tqdm bar on the main process only (other ranks would print interleaved bars)."""
    if not comm.is_main_process():
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=total, desc="inference", dynamic_ncols=True, leave=False)


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable[list[dict]],
    evaluator: DatasetEvaluator | Sequence[DatasetEvaluator] | None,
    progress: "EvaluationProgress | None" = None,
) -> dict[str, dict[str, Any]]:
    """Run ``model`` on every batch of ``data_loader`` and evaluate its outputs.

    The model is put in eval mode (restored afterwards) and runs under ``torch.no_grad()``.
    Timing excludes the first few warm-up batches, as detectron2 does.

    Args:
        model: takes a batch ``list[dict]`` and returns one output dict per input.
        data_loader: yields batches (lists of mapper dicts).
        evaluator: one evaluator, several (run together), or None to only time inference.
        progress: save the evaluators' state as images are done and continue an earlier run's
            (:mod:`.progress`); a signal (Ctrl-C, SIGTERM) then saves it and raises
            :class:`EvaluationStopped`.

    Returns:
        ``evaluator.evaluate()``: ``{family: {metric: value}}`` on the main process, ``{}``
        on the others.
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif not isinstance(evaluator, DatasetEvaluator):
        evaluator = DatasetEvaluators(list(evaluator))
    evaluator.reset()

    try:
        total: int | None = len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    earlier = progress.start(evaluator) if progress is not None else 0
    if earlier:
        logger.info("continuing an interrupted evaluation: %d images were evaluated by an earlier run "
                    "with the same settings (%s; delete it to start over)", earlier, progress.path)
    if earlier and hasattr(data_loader, "pass_through_first"):
        data_loader.pass_through_first(earlier)  # skip them without reading their images
    remaining = None if total is None else max(total - earlier, 0)
    timing = _Timing(warmup=min(5, remaining - 1) if remaining else 0)
    with ExitStack() as stack:
        stack.enter_context(_inference_context(model))
        stack.enter_context(torch.no_grad())
        if progress is not None:
            stack.enter_context(_signals_raise_stop())
        try:
            for inputs in _progress(data_loader, total):
                if progress is not None:
                    inputs = progress.pending(inputs)
                if not inputs:  # done by an earlier run, or a corrupt image the loader skipped
                    continue
                with timing.batch(len(inputs)):
                    outputs = model(inputs)
                if progress is None:
                    evaluator.process(inputs, outputs)
                else:
                    progress.process(evaluator, inputs, outputs)
            if progress is not None:  # all done: computing the metrics may take minutes, or fail
                progress.save()
        except BaseException as exc:
            if progress is None:
                raise
            _save_and_reraise(progress, exc, total)
    timing.log()
    results = evaluator.evaluate()
    if progress is not None:
        progress.finish()
    return results if results is not None else {}


class _Timing:
    """Seconds per image in all and in the model, over the batches after the first ``warmup``
    (which pay for allocation, caches, lazy builds), as detectron2 reports them."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.batches = self.images = 0
        self.start = time.perf_counter()
        self.model_s = 0.0

    @contextmanager
    def batch(self, images: int) -> Iterator[None]:
        """Times the model's work on one batch of ``images``."""
        if self.batches == self.warmup:  # warm-up over: count from here
            self.start, self.model_s, self.images = time.perf_counter(), 0.0, 0
        t0 = time.perf_counter()
        yield
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.model_s += time.perf_counter() - t0
        if self.batches >= self.warmup:
            self.images += images
        self.batches += 1

    def log(self) -> None:
        total_s = time.perf_counter() - self.start
        n = max(self.images, 1)
        logger.info(
            "inference done on %d images (after %d warm-up batches): %s total (%.4f s/img, "
            "model %.4f s/img) per device, %d device(s)",
            self.images, self.warmup, str(datetime.timedelta(seconds=int(total_s))), total_s / n,
            self.model_s / n, comm.get_world_size(),
        )


def _save_and_reraise(progress: "EvaluationProgress", exc: BaseException, total: int | None) -> NoReturn:
    """An evaluation ended early by ``exc``: save what is done, then raise ``exc``, or
    :class:`EvaluationStopped` for a stop signal."""
    try:
        progress.save_on_exit()
    except _Stop:  # a second Ctrl-C while saving: the file of the last save stands
        pass
    if isinstance(exc, _Stop):
        raise EvaluationStopped(exc.signal_name, progress.saved, total, progress.path) from None
    raise exc


class _Stop(BaseException):
    """A stop signal arrived during resumable evaluation (a BaseException, as KeyboardInterrupt
    is, so that no ``except Exception`` on the way swallows it)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class EvaluationStopped(FreeSegError):
    """Evaluation stopped by a signal after saving its progress; ``exit_status`` is 128 + the
    signal's number, as shells report a job a signal ended."""

    def __init__(self, signal_name: str, saved: int, total: int | None, path: str) -> None:
        of = f" of {total}" if total is not None else ""
        super().__init__(f"evaluation stopped by {signal_name}: {saved}{of} images evaluated on this process "
                         f"are saved in {path}; run the same command again to continue from there")
        self.exit_status = 128 + int(signal.Signals[signal_name])


@contextmanager
def _signals_raise_stop() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`_Stop` in the main thread for the duration.

    Data loader workers forked meanwhile inherit the handler; there a signal does what it does
    by default (a terminal's Ctrl-C reaches them too): SIGINT raises KeyboardInterrupt, which
    PyTorch's worker loop takes as "exit quietly", SIGTERM ends the process.
    """
    owner = os.getpid()

    def handle(signum: int, frame: Any) -> None:
        if os.getpid() == owner:
            raise _Stop(signal.Signals(signum).name)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handle)
    except ValueError:  # not the main thread: signals stay with whoever owns them
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
