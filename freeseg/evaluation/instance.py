"""Instance segmentation: COCO segm AP via pycocotools, per class and over seen / unseen classes."""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch

from ..utils import comm
from ..utils.errors import FreeSegError
from .coco_utils import (InstanceGroundTruth, encode_mask, mean_precision, run_coco_eval,
                         stats_dict)
from .evaluator import DatasetEvaluator
from .panoptic import PanopticGroundTruth
from .report import log_summary, save_per_class_csv
from .sem_seg import image_name
from .splits import seen_unseen

logger = logging.getLogger(__name__)


def instances_to_coco(
    instances: Mapping[str, Any], height: int, width: int, num_classes: int, inp: Mapping[str, Any],
    class_agnostic: bool = False,
) -> list[dict]:
    """Model ``instances`` → COCO result dicts (RLE masks, boxes XYWH from the masks).

    Args:
        instances: {"pred_masks": bool [N, H, W], "scores": [N], "pred_classes": int64 [N]}.
        class_agnostic: give every detection category 0 (``pred_classes`` not needed).
    """
    masks = torch.as_tensor(instances["pred_masks"])
    if masks.dim() != 3 or tuple(masks.shape[1:]) != (height, width):
        raise FreeSegError(
            f"instance masks for image {image_name(inp)} have shape {tuple(masks.shape)}, expected "
            f"[N, {height}, {width}]; return predictions at the input's 'height' x 'width'"
        )
    scores = torch.as_tensor(instances["scores"]).float().cpu().tolist()
    n = masks.shape[0]
    if class_agnostic:
        classes = [0] * n
    else:
        classes = torch.as_tensor(instances["pred_classes"]).long().cpu().tolist()
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise FreeSegError(
                f"instance prediction for image {image_name(inp)} has unknown class ids {bad[:5]} "
                f"(data set has {num_classes} classes); use the data set's vocabulary"
            )
    if len(scores) != n or len(classes) != n:
        raise FreeSegError(
            f"instance prediction for image {image_name(inp)} has {n} masks but {len(scores)} "
            f"scores and {len(classes)} classes"
        )
    masks_np = masks.cpu().numpy().astype(bool)
    out = []
    for m, s, c in zip(masks_np, scores, classes):
        rle = encode_mask(m)
        out.append({"category_id": int(c), "segmentation": rle, "score": float(s),
                    "bbox": [float(v) for v in mask_util.toBbox(rle)]})
    return out


def number_images(records: Sequence[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Give gathered per-image records ids 1..N; returns (images, gt annotations, detections)."""
    images, gts, dts = [], [], []
    for i, r in enumerate(records, start=1):
        images.append({"id": i, "height": r["height"], "width": r["width"]})
        gts += [{**a, "image_id": i} for a in r["gt"]]
        dts += [{**a, "image_id": i} for a in r["dt"]]
    return images, gts, dts


class InstanceSegEvaluator(DatasetEvaluator):
    """COCO segm AP/AP50/AP75/APs/APm/APl (×100), ``AP-<class>``, ``AP-seen``, ``AP-unseen``.

    ``process`` takes ``outputs[i]["instances"]`` ({"pred_masks", "scores", "pred_classes"},
    contiguous classes). Only thing classes are evaluated (detections of other classes are
    dropped). Seen/unseen AP = COCO AP restricted to the seen / unseen thing classes with ground
    truth (``trainable_flag``, 1 = seen).
    """

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        thing_ids: Sequence[int],
        trainable_flag: Sequence[int] | None = None,
        json_file: str | None = None,
        dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
        panoptic_json: str | None = None,
        panoptic_root: str | None = None,
        output_dir: str | None = None,
        max_dets_per_image: int = 100,
    ) -> None:
        self._names = list(class_names)
        self._k = len(self._names)
        self._things = sorted(int(t) for t in thing_ids)
        self._split = seen_unseen(self._k, trainable_flag)
        panoptic = PanopticGroundTruth(
            num_classes=self._k, panoptic_json=panoptic_json, panoptic_root=panoptic_root,
            dataset_id_to_contiguous_id=dataset_id_to_contiguous_id)
        self._gt = InstanceGroundTruth(
            num_classes=self._k, json_file=json_file,
            dataset_id_to_contiguous_id=dataset_id_to_contiguous_id,
            panoptic=panoptic, thing_ids=self._things)
        self._to_dataset = {v: k for k, v in (dataset_id_to_contiguous_id or {}).items()}
        self._output_dir = output_dir
        self._max_dets = max_dets_per_image
        self.reset()

    state_attributes = ("_records",)

    def reset(self) -> None:
        self._records: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        things = set(self._things)
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise FreeSegError(
                    f"model output for image {image_name(inp)} has no 'instances'; enable "
                    "MODEL.MASK_FORMER.TEST.INSTANCE_ON"
                )
            h, w, gt = self._gt.load(inp)
            dt = instances_to_coco(out["instances"], h, w, self._k, inp)
            dt = [d for d in dt if d["category_id"] in things]
            gt = [a for a in gt if a["category_id"] in things]
            self._records.append({"height": h, "width": w, "gt": gt, "dt": dt,
                                  "image_id": inp.get("image_id")})

    def evaluate(self) -> dict[str, dict[str, Any]]:
        gathered = comm.gather(self._records)
        if not comm.is_main_process():
            return {}
        records = [r for part in gathered for r in part]
        images, gts, dts = number_images(records)
        if not dts:
            logger.warning("instance evaluator got no detections; AP is NaN")
        ev = run_coco_eval(images, gts, dts, self._things, max_dets=(1, 10, self._max_dets))
        stats = stats_dict(ev)
        res: dict[str, Any] = {k: stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
        per_class = {c: mean_precision(ev, [c]) for c in self._things}
        for c in self._things:
            res[f"AP-{self._names[c]}"] = per_class[c]
        if self._split is not None:
            for gname, ids in (("seen", self._split[0]), ("unseen", self._split[1])):
                ids = [c for c in ids if c in per_class]
                res[f"AP-{gname}"] = mean_precision(ev, ids)
                res[f"AP50-{gname}"] = mean_precision(ev, ids, iou=0.5)
        log_summary("segm", res, ["AP", "AP50", "AP75", "APs", "APm", "APl", "AP-seen",
                                  "AP-unseen"])
        if self._output_dir:
            self._save(records, dts, per_class)
        return {"segm": res}

    def _save(self, records: list[dict], dts: list[dict], per_class: dict[int, float]) -> None:
        os.makedirs(self._output_dir, exist_ok=True)
        id_of = {i: r["image_id"] for i, r in enumerate(records, start=1)}
        results = [{**d, "image_id": id_of[d["image_id"]],
                    "category_id": self._to_dataset.get(d["category_id"], d["category_id"])}
                   for d in dts]
        with open(os.path.join(self._output_dir, "coco_instances_results.json"), "w") as f:
            json.dump(results, f)
        save_per_class_csv(
            os.path.join(self._output_dir, "segm_per_class.csv"),
            ["class_id", "class", "AP"],
            [[c, self._names[c], per_class[c]] for c in self._things],
        )


def masks_from_rles(rles: Sequence[dict]) -> np.ndarray:
    """Decode COCO RLEs → bool [N, H, W] (for tests and tools)."""
    return np.stack([mask_util.decode(r).astype(bool) for r in rles]) if rles else np.zeros(
        (0, 0, 0), dtype=bool)
