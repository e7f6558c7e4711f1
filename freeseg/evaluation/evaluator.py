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
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..utils import comm
from ..utils.errors import FreeSegError
from .report import save_results_json

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
) -> dict[str, dict[str, Any]]:
    """Run ``model`` on every batch of ``data_loader`` and evaluate its outputs.

    The model is put in eval mode (restored afterwards) and runs under ``torch.no_grad()``.
    Timing excludes the first few warm-up batches, as detectron2 does.

    Args:
        model: takes a batch ``list[dict]`` and returns one output dict per input.
        data_loader: yields batches (lists of mapper dicts).
        evaluator: one evaluator, several (run together), or None to only time inference.

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
    num_warmup = min(5, (total or 1) - 1) if total else 0
    start = time.perf_counter()
    compute_time = 0.0
    n_images = 0
    with ExitStack() as stack:
        stack.enter_context(_inference_context(model))
        stack.enter_context(torch.no_grad())
        for idx, inputs in enumerate(_progress(data_loader, total)):
            if idx == num_warmup:
                start = time.perf_counter()
                compute_time = 0.0
                n_images = 0
            if not inputs:  # the loader skipped a corrupt image (warned and counted there)
                continue
            t0 = time.perf_counter()
            outputs = model(inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            compute_time += time.perf_counter() - t0
            evaluator.process(inputs, outputs)
            if idx >= num_warmup:
                n_images += len(inputs)
    total_time = time.perf_counter() - start
    n = max(n_images, 1)
    logger.info(
        "inference done on %d images (after %d warm-up batches): %s total (%.4f s/img, "
        "model %.4f s/img) per device, %d device(s)",
        n_images,
        num_warmup,
        str(datetime.timedelta(seconds=int(total_time))),
        total_time / n,
        compute_time / n,
        comm.get_world_size(),
    )
    results = evaluator.evaluate()
    return results if results is not None else {}
