"""Semantic segmentation: confusion-matrix metrics, FreeSeg's and detectron2's definitions.

Both are computed from the same confusion matrix ``conf[pred, gt]`` of shape [K+1, K+1] (row and
column K collect ignored ground-truth pixels, which are then left out):

- per-class IoU_k = TP / (GT + Pred - TP) and ACC_k = TP / GT for classes present in the GT
  (NaN otherwise); fwIoU, pACC and mACC are the same in both definitions.
- **FreeSeg** (headline ``mIoU``): sum of IoU over classes present in the GT, divided by the
  number of classes present in the GT *or the predictions*: a class predicted but absent from
  the GT counts as 0. Per evaluation set S: ``mIoU-S``, ``mIoU-unS`` (complement), ``hIoU-S``
  (harmonic mean), ``pAcc-S``, ``pAcc-unS``.
- **detectron2** (``mIoU-d2``): mean IoU over classes present in the GT only, plus detectron2's
  ``BoundaryIoU-<class>`` and ``min(IoU, B-Iou)-<class>``.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from ..data.mappers.common import remap_labels
from ..utils import comm
from ..utils.errors import FreeSegError
from .evaluator import DatasetEvaluator
from .report import log_summary, save_per_class_csv
from .splits import harmonic_mean, resolve_evaluation_sets

logger = logging.getLogger(__name__)


def image_name(inp: Mapping[str, Any]) -> str:
    """How errors name an image: its file name, else its id."""
    return str(inp.get("file_name") or inp.get("image_id") or "<unnamed image>")


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int
) -> np.ndarray:
    """``conf[p, g]`` pixel counts, int64 [K+1, K+1]; ignored GT pixels land in column K.

    Args:
        pred: int [H, W] predicted class ids in 0..K-1.
        gt: int [H, W] class ids in 0..K-1 or ``ignore_label``.
    """
    gt = np.where(gt == ignore_label, num_classes, gt).astype(np.int64)
    n = num_classes + 1
    return np.bincount(
        n * pred.astype(np.int64).reshape(-1) + gt.reshape(-1), minlength=n * n
    ).reshape(n, n)


def mask_to_boundary(label_map: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """detectron2's boundary of a uint8 [H, W] map: the map minus its erosion.

    detectron2 applies this to the *label map* (not per-class binary masks), so a boundary pixel
    holds the difference of two label values; we keep that definition to report the same
    ``BoundaryIoU`` numbers.
    """
    h, w = label_map.shape
    dilation = max(1, int(round(dilation_ratio * math.sqrt(h**2 + w**2))))
    padded = cv2.copyMakeBorder(label_map, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=dilation)[1:-1, 1:-1]
    return label_map - eroded


def _basic_stats(conf: np.ndarray) -> dict[str, np.ndarray]:
    tp = conf.diagonal()[:-1].astype(np.float64)
    pos_gt = conf[:-1, :-1].sum(axis=0).astype(np.float64)
    pos_pred = conf[:-1, :-1].sum(axis=1).astype(np.float64)
    gt_present = pos_gt > 0
    acc = np.full(tp.shape, np.nan)
    iou = np.full(tp.shape, np.nan)
    acc[gt_present] = tp[gt_present] / pos_gt[gt_present]
    union = pos_gt + pos_pred - tp
    iou[gt_present] = tp[gt_present] / union[gt_present]
    return dict(tp=tp, pos_gt=pos_gt, pos_pred=pos_pred, gt_present=gt_present, acc=acc, iou=iou)


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b != 0 else math.nan


def freeseg_semseg_metrics(
    conf: np.ndarray,
    class_names: Sequence[str],
    evaluation_sets: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, float]:
    """FreeSeg's GeneralizedSemSegEvaluator metrics (×100) from ``conf`` [K+1, K+1]."""
    s = _basic_stats(conf)
    tp, pos_gt, gt_present, iou, acc = s["tp"], s["pos_gt"], s["gt_present"], s["iou"], s["acc"]
    seen_any = (pos_gt + s["pos_pred"]) > 0  # FreeSeg's iou_valid: in GT or predicted
    weights = pos_gt / pos_gt.sum() if pos_gt.sum() > 0 else np.zeros_like(pos_gt)
    res: dict[str, float] = {
        "mIoU": 100 * _safe_div(iou[gt_present].sum(), seen_any.sum()),
        "fwIoU": 100 * float((iou[gt_present] * weights[gt_present]).sum()),
    }
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * float(iou[i])
    res["mACC"] = 100 * _safe_div(acc[gt_present].sum(), gt_present.sum())
    res["pACC"] = 100 * _safe_div(tp.sum(), pos_gt.sum())
    for i, name in enumerate(class_names):
        res[f"ACC-{name}"] = 100 * float(acc[i])
    for set_name, ids in (evaluation_sets or {}).items():
        in_set = np.zeros(len(class_names), dtype=bool)
        in_set[list(ids)] = True
        parts = []
        for prefix, m in (("", in_set), ("un", ~in_set)):
            miou = _safe_div(iou[m][gt_present[m]].sum(), seen_any[m].sum())
            res[f"mIoU-{prefix}{set_name}"] = 100 * miou
            res[f"pAcc-{prefix}{set_name}"] = 100 * _safe_div(tp[m].sum(), pos_gt[m].sum())
            parts.append(miou)
        res[f"hIoU-{set_name}"] = 100 * harmonic_mean(parts)
    return res


def detectron2_semseg_metrics(
    conf: np.ndarray, class_names: Sequence[str], boundary_conf: np.ndarray | None = None
) -> dict[str, float]:
    """detectron2's SemSegEvaluator metrics (×100); ``mIoU`` = mean over GT-present classes."""
    s = _basic_stats(conf)
    tp, pos_gt, gt_present, iou, acc = s["tp"], s["pos_gt"], s["gt_present"], s["iou"], s["acc"]
    weights = pos_gt / pos_gt.sum() if pos_gt.sum() > 0 else np.zeros_like(pos_gt)
    b_iou = None
    if boundary_conf is not None:
        b = _basic_stats(boundary_conf)
        b_union = b["pos_gt"] + b["pos_pred"] - b["tp"]
        b_iou = np.full(b_union.shape, np.nan)
        b_iou[b_union > 0] = b["tp"][b_union > 0] / b_union[b_union > 0]
    res: dict[str, float] = {
        "mIoU": 100 * _safe_div(iou[gt_present].sum(), gt_present.sum()),
        "fwIoU": 100 * float((iou[gt_present] * weights[gt_present]).sum()),
    }
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * float(iou[i])
        if b_iou is not None:
            res[f"BoundaryIoU-{name}"] = 100 * float(b_iou[i])
            # NaN IoU stays NaN, as Python's min(nan, x) returns nan in detectron2.
            res[f"min(IoU, B-Iou)-{name}"] = 100 * float(min(iou[i], b_iou[i]))
    res["mACC"] = 100 * _safe_div(acc[gt_present].sum(), gt_present.sum())
    res["pACC"] = 100 * _safe_div(tp.sum(), pos_gt.sum())
    for i, name in enumerate(class_names):
        res[f"ACC-{name}"] = 100 * float(acc[i])
    return res


def load_sem_seg_gt(inp: Mapping[str, Any]) -> np.ndarray:
    """int64 [H, W] ground truth from ``sem_seg_file_name`` (original size) or ``sem_seg``."""
    path = inp.get("sem_seg_file_name")
    if path:
        if not os.path.isfile(path):
            raise FreeSegError(
                f"ground-truth label map of image {image_name(inp)} not found: {path}; "
                "prepare the data set (see `freeseg prepare`) or fix its sem_seg_root"
            )
        with Image.open(path) as im:
            labels = np.asarray(im, dtype=np.int64)
        return remap_labels(labels, inp.get("sem_seg_lut"))
    if "sem_seg" in inp:
        return torch.as_tensor(inp["sem_seg"]).cpu().numpy().astype(np.int64)
    raise FreeSegError(
        f"image {image_name(inp)} has no semantic ground truth ('sem_seg_file_name' or "
        "'sem_seg'); evaluate on a data set with label maps"
    )


class SemSegEvaluator(DatasetEvaluator):
    """Semantic segmentation metrics, FreeSeg's and detectron2's (see the module docstring).

    ``process`` reads ``outputs[i]["sem_seg"]`` (float [K, H, W] scores; argmax = prediction)
    and the ground truth of ``inputs[i]`` (``sem_seg_file_name``, 255 = ignore). ``evaluate``
    returns ``{"sem_seg": {...}}`` with FreeSeg's keys plus ``mIoU-d2``, ``BoundaryIoU-<c>`` and
    ``min(IoU, B-Iou)-<c>``.
    """

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        ignore_label: int = 255,
        evaluation_set: Mapping[str, Sequence[int]] | None = None,
        trainable_flag: Sequence[int] | None = None,
        output_dir: str | None = None,
        boundary_iou: bool = True,
    ) -> None:
        self._class_names = list(class_names)
        self._k = len(self._class_names)
        self._ignore_label = int(ignore_label)
        self._sets = resolve_evaluation_sets(self._k, evaluation_set, trainable_flag)
        self._output_dir = output_dir
        # detectron2 skips boundary IoU when labels (plus the ignore slot) do not fit in uint8.
        self._boundary = boundary_iou and self._k < 255
        self.reset()

    state_attributes = ("_conf", "_b_conf")

    def reset(self) -> None:
        n = self._k + 1
        self._conf = np.zeros((n, n), dtype=np.int64)
        self._b_conf = np.zeros((n, n), dtype=np.int64)

    def _check_gt(self, gt: np.ndarray, inp: Mapping[str, Any]) -> None:
        valid = (gt >= 0) & (gt < self._k) | (gt == self._ignore_label)
        if not valid.all():
            bad = np.unique(gt[~valid])[:5].tolist()
            raise FreeSegError(
                f"ground truth of image {image_name(inp)} has unknown class ids {bad} "
                f"(data set has {self._k} classes, ignore label {self._ignore_label}); "
                "check the label maps and the data set's class list"
            )

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            scores = out.get("sem_seg")
            if scores is None or scores.dim() != 3 or scores.shape[0] != self._k:
                shape = None if scores is None else tuple(scores.shape)
                raise FreeSegError(
                    f"prediction for image {image_name(inp)} must be 'sem_seg' [K={self._k}, H, W] "
                    f"scores, got {shape}; use the data set's vocabulary at test time"
                )
            pred = scores.argmax(dim=0).cpu().numpy()
            gt = load_sem_seg_gt(inp)
            if gt.shape != pred.shape:
                raise FreeSegError(
                    f"prediction for image {image_name(inp)} is {pred.shape[0]}x{pred.shape[1]} "
                    f"but its ground truth is {gt.shape[0]}x{gt.shape[1]}; return predictions at "
                    "the input's 'height' x 'width'"
                )
            self._check_gt(gt, inp)
            self._conf += confusion_matrix(pred, gt, self._k, self._ignore_label)
            if self._boundary:
                gt_k = np.where(gt == self._ignore_label, self._k, gt).astype(np.uint8)
                b_gt = mask_to_boundary(gt_k)
                b_pred = mask_to_boundary(pred.astype(np.uint8))
                n = self._k + 1
                self._b_conf += np.bincount(
                    n * b_pred.reshape(-1).astype(np.int64) + b_gt.reshape(-1), minlength=n * n
                ).reshape(n, n)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        gathered = comm.gather((self._conf, self._b_conf))
        if not comm.is_main_process():
            return {}
        conf = sum(g[0] for g in gathered)
        b_conf = sum(g[1] for g in gathered)
        if conf[:-1, :].sum() + conf[:, :-1].sum() == 0:
            logger.warning("semantic evaluator got no labelled pixels; metrics are NaN")
        res = freeseg_semseg_metrics(conf, self._class_names, self._sets)
        d2 = detectron2_semseg_metrics(conf, self._class_names, b_conf if self._boundary else None)
        res["mIoU-d2"] = d2["mIoU"]
        for k, v in d2.items():
            if k.startswith(("BoundaryIoU-", "min(IoU, B-Iou)-")):
                res[k] = v
        keys = ["mIoU", "mIoU-d2", "fwIoU", "mACC", "pACC"]
        for s in self._sets:
            keys += [f"mIoU-{s}", f"mIoU-un{s}", f"hIoU-{s}", f"pAcc-{s}", f"pAcc-un{s}"]
        log_summary("sem_seg", res, keys)
        if self._output_dir:
            save_per_class_csv(
                os.path.join(self._output_dir, "sem_seg_per_class.csv"),
                ["class_id", "class", "IoU", "ACC", "BoundaryIoU"],
                [
                    [i, n, res[f"IoU-{n}"], res[f"ACC-{n}"], res.get(f"BoundaryIoU-{n}", math.nan)]
                    for i, n in enumerate(self._class_names)
                ],
            )
        return {"sem_seg": res}
