"""Stage-1 evaluation: region classification accuracy (top-1 / top-5).

Reported per sample (``Top1``, ``Top5``), per class (``Top1-<class>``), as the mean over classes
with samples (``mTop1``, ``mTop5``), and per evaluation set S over the classes in S and in its
complement (``Top1-S`` / ``Top1-unS`` per sample, ``mTop1-S`` / ``mTop1-unS`` per class), all ×100.
Top-k is taken over the full vocabulary (K classes), as the model is used.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..utils import comm
from ..utils.errors import FreeSegError
from .evaluator import DatasetEvaluator
from .report import log_summary, save_per_class_csv
from .sem_seg import image_name
from .splits import resolve_evaluation_sets


def _gt_class(inp: Mapping[str, Any]) -> int:
    if "category_id" in inp:
        return int(inp["category_id"])
    inst = inp.get("instances")
    if isinstance(inst, Mapping) and len(inst.get("gt_classes", [])) == 1:
        return int(torch.as_tensor(inst["gt_classes"]).reshape(-1)[0])
    raise FreeSegError(
        f"classification sample {image_name(inp)} has no 'category_id' (or one-element "
        "instances.gt_classes); evaluate on a *_classification data set"
    )


class ClassificationEvaluator(DatasetEvaluator):
    """Top-1/top-5 accuracy of stage-1 region classification; outputs carry ``logits`` [K]."""

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        evaluation_set: Mapping[str, Sequence[int]] | None = None,
        trainable_flag: Sequence[int] | None = None,
        output_dir: str | None = None,
        topk: tuple[int, int] = (1, 5),
    ) -> None:
        self._names = list(class_names)
        self._k = len(self._names)
        self._sets = resolve_evaluation_sets(self._k, evaluation_set, trainable_flag)
        self._topk = topk
        self._output_dir = output_dir
        self.reset()

    state_attributes = ("_counts",)

    def reset(self) -> None:
        # per class: number of samples, hits@k1, hits@k2 — small and summable across ranks
        self._counts = np.zeros((self._k, 3), dtype=np.int64)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            logits = torch.as_tensor(out.get("logits")) if "logits" in out else None
            if logits is None or logits.reshape(-1).numel() != self._k:
                shape = None if logits is None else tuple(logits.shape)
                raise FreeSegError(
                    f"classification output for sample {image_name(inp)} must be 'logits' "
                    f"[K={self._k}], got {shape}; use the data set's vocabulary"
                )
            gt = _gt_class(inp)
            if not 0 <= gt < self._k:
                raise FreeSegError(
                    f"classification sample {image_name(inp)} has unknown class id {gt} "
                    f"(data set has {self._k} classes)"
                )
            logits = logits.reshape(-1).float()
            # rank of the GT class: how many classes score strictly higher
            rank = int((logits > logits[gt]).sum())
            self._counts[gt] += [1, rank < self._topk[0], rank < self._topk[1]]

    @staticmethod
    def _acc(counts: np.ndarray, col: int) -> tuple[float, float]:
        """(per-sample accuracy, mean per-class accuracy) ×100 over the rows of ``counts``."""
        n = counts[:, 0]
        per_sample = 100 * counts[:, col].sum() / n.sum() if n.sum() else math.nan
        has = n > 0
        per_class = 100 * float(np.mean(counts[has, col] / n[has])) if has.any() else math.nan
        return float(per_sample), per_class

    def evaluate(self) -> dict[str, dict[str, Any]]:
        gathered = comm.gather(self._counts)
        if not comm.is_main_process():
            return {}
        counts = sum(gathered)
        k1, k2 = self._topk
        res: dict[str, Any] = {}
        for col, k in ((1, k1), (2, k2)):
            res[f"Top{k}"], res[f"mTop{k}"] = self._acc(counts, col)
        for set_name, ids in self._sets.items():
            in_set = np.zeros(self._k, dtype=bool)
            in_set[ids] = True
            for prefix, m in (("", in_set), ("un", ~in_set)):
                for col, k in ((1, k1), (2, k2)):
                    res[f"Top{k}-{prefix}{set_name}"], res[f"mTop{k}-{prefix}{set_name}"] = (
                        self._acc(counts[m], col))
        n = counts[:, 0]
        for c, name in enumerate(self._names):
            res[f"Top{k1}-{name}"] = 100 * counts[c, 1] / n[c] if n[c] else math.nan
        keys = [f"Top{k1}", f"Top{k2}", f"mTop{k1}", f"mTop{k2}"]
        for s in self._sets:
            keys += [f"Top{k1}-{s}", f"Top{k1}-un{s}", f"mTop{k1}-{s}", f"mTop{k1}-un{s}"]
        log_summary("classification", res, keys)
        if self._output_dir:
            save_per_class_csv(
                os.path.join(self._output_dir, "classification_per_class.csv"),
                ["class_id", "class", "samples", f"Top{k1}", f"Top{k2}"],
                [[c, name, int(n[c]), *(100 * counts[c, j] / n[c] if n[c] else math.nan
                                       for j in (1, 2))] for c, name in enumerate(self._names)],
            )
        return {"classification": res}
