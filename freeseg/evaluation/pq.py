"""Panoptic quality, computed exactly as panopticapi's ``pq_compute`` does.

panopticapi is not on PyPI, so its algorithm is written out here (same matching, same crowd and
void handling, same averaging) and checked against its output on the shared golden fixture:

- ids are kept as int64 (COCO panoptic PNGs encode id = R + 256·G + 256²·B; never cast to uint8);
- a GT and a predicted segment of the same category match when IoU > 0.5, where the union leaves
  out the predicted pixels that fall on void (id 0) in the GT; crowd GT segments never match;
- GT area comes from the annotation (``area`` field), predicted area is counted on the map;
- an unmatched prediction is not a false positive when more than half of it lies on void or on
  a crowd region of its own category;
- PQ/SQ/RQ are averaged over categories with at least one TP, FP or FN.
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from ..utils.colors import id_to_rgb, rgb_to_id
from ..utils.errors import FreeSegError

OFFSET = 256 * 256 * 256
VOID = 0


# panopticapi's names for the COCO panoptic colour encoding (one implementation, in utils).
rgb2id, id2rgb = rgb_to_id, id_to_rgb


def read_panoptic_png(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return rgb2id(np.asarray(im.convert("RGB"), dtype=np.uint32))


@dataclass
class PQStatCat:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: "PQStatCat") -> "PQStatCat":
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


class PQStat:
    """Per-category sums of matched IoU, TP, FP and FN; adds up over images and ranks."""

    def __init__(self) -> None:
        self.per_cat: dict[int, PQStatCat] = defaultdict(PQStatCat)

    def __iadd__(self, other: "PQStat") -> "PQStat":
        for cat, stat in other.per_cat.items():
            self.per_cat[cat] += stat
        return self

    def average(self, category_ids: Iterable[int]) -> tuple[dict[str, float], dict[int, dict]]:
        """panopticapi's ``pq_average`` over ``category_ids``.

        Returns ``({"pq", "sq", "rq", "n"}, {cat: {"pq", "sq", "rq"}})``; categories without any
        TP/FP/FN get zeros per class and are not counted in ``n``. With ``n == 0`` the averages
        are NaN (panopticapi would divide by zero).
        """
        pq = sq = rq = 0.0
        n = 0
        per_class: dict[int, dict] = {}
        for cat in category_ids:
            s = self.per_cat.get(cat, PQStatCat())
            if s.tp + s.fp + s.fn == 0:
                per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            pq_c, sq_c, rq_c = s.iou / denom, (s.iou / s.tp if s.tp else 0.0), s.tp / denom
            per_class[cat] = {"pq": pq_c, "sq": sq_c, "rq": rq_c}
            pq, sq, rq = pq + pq_c, sq + sq_c, rq + rq_c
        if n == 0:
            return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def pq_single_image(
    gt_ids: np.ndarray,
    gt_segments: Mapping[int, Mapping[str, Any]],
    pred_ids: np.ndarray,
    pred_segments: Mapping[int, Mapping[str, Any]],
    categories: Iterable[int],
    image: str,
) -> PQStat:
    """PQ counts of one image.

    Args:
        gt_ids, pred_ids: int [H, W] segment ids, 0 = void.
        gt_segments: id -> {"category_id", "iscrowd", "area"}.
        pred_segments: id -> {"category_id"}.
        categories: the valid category ids.
        image: the image's name, for error messages.
    """
    if gt_ids.shape != pred_ids.shape:
        raise FreeSegError(
            f"panoptic prediction for image {image} is {pred_ids.shape[0]}x{pred_ids.shape[1]} but "
            f"its ground truth is {gt_ids.shape[0]}x{gt_ids.shape[1]}; return predictions at the "
            "input's 'height' x 'width'"
        )
    categories = set(categories)
    stat = PQStat()
    pred_area: dict[int, int] = {}
    labels, counts = np.unique(pred_ids, return_counts=True)
    for label, cnt in zip(labels.tolist(), counts.tolist()):
        if label not in pred_segments:
            if label == VOID:
                continue
            raise FreeSegError(
                f"panoptic prediction for image {image}: segment id {label} is in the map but not in "
                "segments_info; list every non-zero id of the map in segments_info"
            )
        pred_area[label] = cnt
        cat = pred_segments[label]["category_id"]
        if cat not in categories:
            raise FreeSegError(
                f"panoptic prediction for image {image}: segment {label} has unknown category id "
                f"{cat}; predict only the data set's classes"
            )
    missing = set(pred_segments) - set(pred_area)
    if missing:
        raise FreeSegError(
            f"panoptic prediction for image {image}: segment ids {sorted(missing)[:5]} are in "
            "segments_info but not in the map; drop empty segments from segments_info"
        )

    joint = gt_ids.astype(np.uint64) * OFFSET + pred_ids.astype(np.uint64)
    labels, counts = np.unique(joint, return_counts=True)
    inter = {(int(l) // OFFSET, int(l) % OFFSET): int(c) for l, c in zip(labels, counts)}

    gt_matched, pred_matched = set(), set()
    for (g, p), intersection in inter.items():
        if g not in gt_segments or p not in pred_segments:
            continue
        gs, ps = gt_segments[g], pred_segments[p]
        if gs["iscrowd"] == 1 or gs["category_id"] != ps["category_id"]:
            continue
        union = pred_area[p] + gs["area"] - intersection - inter.get((VOID, p), 0)
        iou = intersection / union
        if iou > 0.5:
            s = stat.per_cat[gs["category_id"]]
            s.tp += 1
            s.iou += iou
            gt_matched.add(g)
            pred_matched.add(p)

    crowd_by_cat: dict[int, int] = {}
    for g, gs in gt_segments.items():
        if g in gt_matched:
            continue
        if gs["iscrowd"] == 1:
            crowd_by_cat[gs["category_id"]] = g
            continue
        stat.per_cat[gs["category_id"]].fn += 1

    for p, ps in pred_segments.items():
        if p in pred_matched:
            continue
        ignored = inter.get((VOID, p), 0)
        if ps["category_id"] in crowd_by_cat:
            ignored += inter.get((crowd_by_cat[ps["category_id"]], p), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        stat.per_cat[ps["category_id"]].fp += 1
    return stat


def summarize(
    stat: PQStat, isthing: Mapping[int, bool]
) -> dict[str, Any]:
    """panopticapi's result layout: ``{"All", "Things", "Stuff": {pq, sq, rq, n}, "per_class"}``."""
    cats = list(isthing)
    results: dict[str, Any] = {}
    results["All"], results["per_class"] = stat.average(cats)
    results["Things"], _ = stat.average([c for c in cats if isthing[c]])
    results["Stuff"], _ = stat.average([c for c in cats if not isthing[c]])
    return results


def pq_compute(
    gt_json_file: str, pred_json_file: str, gt_folder: str, pred_folder: str
) -> dict[str, Any]:
    """Files in, panopticapi's results out (same signature and layout as ``pq_compute``).

    Category ids are the JSON's (dataset) ids; every GT image must have a prediction.
    """
    for path, what in ((gt_json_file, "ground-truth JSON"), (pred_json_file, "prediction JSON")):
        if not os.path.isfile(path):
            raise FreeSegError(f"panoptic {what} not found: {path}")
    with open(gt_json_file) as f:
        gt_json = json.load(f)
    with open(pred_json_file) as f:
        pred_json = json.load(f)
    isthing = {c["id"]: c["isthing"] == 1 for c in gt_json["categories"]}
    preds = {a["image_id"]: a for a in pred_json["annotations"]}
    stat = PQStat()
    for gt_ann in gt_json["annotations"]:
        image = gt_ann["file_name"]
        if gt_ann["image_id"] not in preds:
            raise FreeSegError(f"no panoptic prediction for image {image} (id {gt_ann['image_id']})")
        pred_ann = preds[gt_ann["image_id"]]
        gt_path = os.path.join(gt_folder, gt_ann["file_name"])
        if not os.path.isfile(gt_path):
            raise FreeSegError(f"panoptic ground truth of image {image} not found: {gt_path}")
        stat += pq_single_image(
            read_panoptic_png(gt_path),
            {s["id"]: s for s in gt_ann["segments_info"]},
            read_panoptic_png(os.path.join(pred_folder, pred_ann["file_name"])),
            {s["id"]: s for s in pred_ann["segments_info"]},
            isthing,
            image,
        )
    return summarize(stat, isthing)
