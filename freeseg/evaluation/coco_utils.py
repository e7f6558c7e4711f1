"""pycocotools plumbing shared by the instance, open-world and entity evaluators.

Ground truth and detections are kept as COCO annotation dicts with RLE masks (compact enough to
gather across ranks); :func:`run_coco_eval` builds in-memory ``COCO`` objects and runs
``COCOeval`` (the official implementation; numbers are pycocotools' own).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..utils.errors import FreeSegError
from .panoptic import PanopticGroundTruth
from .sem_seg import image_name

logger = logging.getLogger(__name__)

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl"]


def encode_mask(mask: np.ndarray) -> dict:
    """bool [H, W] → COCO RLE with ``counts`` as str (JSON- and pickle-friendly)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def segmentation_to_rle(segm: Any, h: int, w: int) -> dict:
    """Polygons, uncompressed or compressed RLE → compressed RLE of an [h, w] image."""
    if isinstance(segm, list):  # polygons
        return mask_util.merge(mask_util.frPyObjects(segm, h, w))
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return mask_util.frPyObjects(segm, h, w)
    if isinstance(segm, dict):
        return segm
    mask = torch.as_tensor(segm).cpu().numpy().astype(bool)
    return encode_mask(mask)


def _rle_str(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]),
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


class InstanceGroundTruth:
    """An image's instance ground truth as COCO annotations with contiguous category ids.

    Sources, in order: the input's ``annotations`` (contiguous ids, polygons or RLE, as the data
    set dicts carry them); a COCO instances JSON (``json_file``, data set category ids converted
    with ``dataset_id_to_contiguous_id``; looked up by ``image_id`` or file name); the panoptic
    ground truth (see :class:`PanopticGroundTruth`; with ``thing_ids`` only thing segments).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        json_file: str | None = None,
        dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
        panoptic: PanopticGroundTruth | None = None,
        thing_ids: Iterable[int] | None = None,
    ) -> None:
        self._k = num_classes
        self._map = {int(k): int(v) for k, v in (dataset_id_to_contiguous_id or {}).items()}
        self._panoptic = panoptic
        self._things = set(int(t) for t in thing_ids) if thing_ids is not None else None
        self._warned: set[int] = set()
        self._anns: dict[Any, list[dict]] = {}
        self._images: dict[Any, dict] = {}
        self._by_name: dict[str, Any] = {}
        if json_file:
            if not os.path.isfile(json_file):
                raise FreeSegError(
                    f"instance ground-truth JSON not found: {json_file}; prepare the data set or "
                    "fix its json_file"
                )
            with open(json_file) as f:
                data = json.load(f)
            for im in data["images"]:
                self._images[im["id"]] = im
                self._anns[im["id"]] = []
                self._by_name[os.path.splitext(os.path.basename(im["file_name"]))[0]] = im["id"]
            for a in data["annotations"]:
                self._anns.setdefault(a["image_id"], []).append(a)

    def _check_cat(self, cat: int, inp: Mapping[str, Any]) -> int:
        if not 0 <= cat < self._k:
            raise FreeSegError(
                f"instance ground truth of image {image_name(inp)} has unknown class id {cat} "
                f"(data set has {self._k} classes); check its annotations"
            )
        return cat

    def _from_json(self, inp: Mapping[str, Any]) -> tuple[int, int, list[dict]] | None:
        key = inp.get("image_id")
        if key not in self._images and inp.get("file_name"):
            key = self._by_name.get(os.path.splitext(os.path.basename(inp["file_name"]))[0])
        if key not in self._images:
            return None
        im = self._images[key]
        out = []
        for a in self._anns[key]:
            if a["category_id"] not in self._map:
                # Instance JSONs often cover more classes than a split (e.g. COCO's 80 things
                # for a base-class set): those annotations are not part of this data set.
                if a["category_id"] not in self._warned:
                    self._warned.add(a["category_id"])
                    logger.warning("instance ground truth: category id %s is not in the data set; "
                                   "its annotations are dropped", a["category_id"])
                continue
            rle = segmentation_to_rle(a["segmentation"], im["height"], im["width"])
            out.append({"category_id": self._map[a["category_id"]],
                        "segmentation": _rle_str(rle), "area": a["area"],
                        "iscrowd": a.get("iscrowd", 0)})
        return im["height"], im["width"], out

    def load(self, inp: Mapping[str, Any]) -> tuple[int, int, list[dict]]:
        """(height, width, [{"category_id", "segmentation" (RLE), "area", "iscrowd"}])."""
        if "annotations" in inp:
            h, w = int(inp["height"]), int(inp["width"])
            out = []
            for a in inp["annotations"]:
                rle = segmentation_to_rle(a["segmentation"], h, w)
                out.append({"category_id": self._check_cat(int(a["category_id"]), inp),
                            "segmentation": _rle_str(rle), "area": float(mask_util.area(rle)),
                            "iscrowd": int(a.get("iscrowd", 0))})
            return h, w, out
        found = self._from_json(inp) if self._images else None
        if found is not None:
            return found
        if self._panoptic is not None and (inp.get("pan_seg_file_name") or self._panoptic.has_json):
            ids, segs = self._panoptic.load(inp)
            out = []
            for sid, s in segs.items():
                if self._things is not None and s["category_id"] not in self._things:
                    continue
                rle = encode_mask(ids == sid)
                out.append({"category_id": s["category_id"], "segmentation": rle,
                            "area": float(mask_util.area(rle)), "iscrowd": s["iscrowd"]})
            return ids.shape[0], ids.shape[1], out
        raise FreeSegError(
            f"image {image_name(inp)} has no instance ground truth (not in json_file, no "
            "'annotations' or panoptic ground truth); evaluate on an instance data set"
        )


def run_coco_eval(
    images: Sequence[Mapping[str, Any]],
    gt_anns: Sequence[Mapping[str, Any]],
    dt_anns: Sequence[Mapping[str, Any]],
    category_ids: Sequence[int],
    max_dets: Sequence[int] = (1, 10, 100),
) -> COCOeval | None:
    """Run pycocotools' segm COCOeval; None when there are no detections.

    Args:
        images: [{"id", "height", "width"}] — the evaluated images.
        gt_anns: [{"image_id", "category_id", "segmentation" (RLE), "area", "iscrowd"}].
        dt_anns: [{"image_id", "category_id", "segmentation" (RLE), "score"}].
        category_ids: the evaluated categories (COCO ids, any ints).
    """
    if not dt_anns:
        return None  # pycocotools' loadRes cannot take an empty list
    gt = COCO()
    gt.dataset = {
        "images": [dict(im) for im in images],
        "annotations": [{**a, "id": i + 1} for i, a in enumerate(gt_anns)],
        "categories": [{"id": int(c), "name": str(c)} for c in category_ids],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        gt.createIndex()
        dt = gt.loadRes([dict(a) for a in dt_anns])
        ev = COCOeval(gt, dt, iouType="segm")
        ev.params.imgIds = sorted(im["id"] for im in images)
        ev.params.catIds = sorted(int(c) for c in category_ids)
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def stats_dict(ev: COCOeval | None, scale: float = 100.0) -> dict[str, float]:
    """The 12 COCO stats ×scale; -1 (not computable) and missing evaluation → NaN."""
    if ev is None:
        return {k: float("nan") for k in STAT_NAMES}
    return {k: (float(v) * scale if v >= 0 else float("nan")) for k, v in zip(STAT_NAMES, ev.stats)}


def mean_precision(ev: COCOeval | None, category_ids: Iterable[int], iou: float | None = None
                   ) -> float:
    """AP (×100) over ``category_ids`` from the accumulated precision (area all, last maxDets).

    Equals COCOeval's AP restricted to those categories (entries of -1, i.e. categories without
    GT, are left out); NaN when none has GT. ``iou`` picks one threshold (0.5, 0.75).
    """
    if ev is None:
        return float("nan")
    cat_index = {c: i for i, c in enumerate(ev.params.catIds)}
    idx = [cat_index[c] for c in category_ids if c in cat_index]
    if not idx:
        return float("nan")
    prec = ev.eval["precision"][:, :, idx, 0, -1]
    if iou is not None:
        t = int(np.argmin(np.abs(ev.params.iouThrs - iou)))
        prec = prec[t]
    prec = prec[prec > -1]
    return float(np.mean(prec) * 100) if prec.size else float("nan")
