"""Functions that turn an on-disk data set into detectron2-style data set dicts.

Every loader checks its folders first and raises a FreeSegError that names the missing folder,
the expected layout and the preparation script to run, instead of an assert deep inside.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

from ..utils.errors import FreeSegError

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def require_paths(paths: list[str], dataset: str, layout: str, script: str) -> None:
    """Raise a FreeSegError naming the first missing path, the layout and the fix."""
    for p in paths:
        if not os.path.exists(p):
            raise FreeSegError(
                f"data set '{dataset}': {p} not found (expected layout: {layout}); "
                f"set $DETECTRON2_DATASETS to the folder holding it, or run `{script}`"
            )


def read_json(path: str, fix: str) -> Any:
    """``json.load`` of ``path``; a damaged file (truncated, not JSON) is a FreeSegError naming it
    and ``fix``."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FreeSegError(f"{path} is not valid JSON ({e}); the file is damaged or truncated: {fix}") from None


def _stem_map(folder: str, exts: tuple[str, ...]) -> dict[str, str]:
    return {
        os.path.splitext(f)[0]: os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(exts)
    }


def load_sem_seg(gt_root: str, image_root: str, gt_exts: tuple[str, ...] = (".png",),
                 image_exts: tuple[str, ...] = (".jpg",)) -> list[dict[str, Any]]:
    """Pair images and label maps by file stem (sorted). Label maps without an image are an error
    naming the label file; images without a label map are skipped (the preparation scripts drop
    all-ignore maps, as the original did)."""
    gts = _stem_map(gt_root, gt_exts)
    images = _stem_map(image_root, image_exts)
    missing = sorted(set(gts) - set(images))
    if missing:
        raise FreeSegError(
            f"label map {gts[missing[0]]} has no image in {image_root} ({len(missing)} such); "
            "check that images and label maps come from the same split"
        )
    out = []
    for i, stem in enumerate(sorted(gts)):
        out.append({"file_name": images[stem], "sem_seg_file_name": gts[stem], "image_id": stem})
    if not out:
        raise FreeSegError(f"no label maps found in {gt_root}; run the preparation script for this data set")
    logger.info("Loaded %d images with semantic segmentation from %s", len(out), image_root)
    return out


def label_count_file(gt_root: str) -> str:
    """Where the per-image class list lives: ``<gt_root>_label_count.json`` (the loader's path;
    the preparation scripts write it there)."""
    return gt_root.rstrip("/\\") + "_label_count.json"


def load_classification(gt_root: str, image_root: str, *, image_exts: tuple[str, ...] = (".jpg",),
                        lut: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Stage-1 semantic samples: one dict per (image, class present in its label map), the
    classes read from the label-count file; with ``lut`` (label value -> class id, 255 =
    ignored: a data set's ``sem_seg_lut``) the classes are mapped through it, and each sample
    carries it for the mapper."""
    path = label_count_file(gt_root)
    if not os.path.exists(path):
        raise FreeSegError(
            f"label-count file {path} not found; run `freeseg prepare mask_cls_collect {gt_root}`"
        )
    counts = read_json(path, f"re-run `freeseg prepare mask_cls_collect {gt_root}`")
    extra = {} if lut is None else {"sem_seg_lut": list(lut)}
    out = []
    for d in load_sem_seg(gt_root, image_root, image_exts=image_exts):
        for value in counts.get(os.path.basename(d["sem_seg_file_name"]), []):
            cat = int(value) if lut is None else (lut[int(value)] if int(value) < len(lut) else 255)
            if cat != 255:
                out.append({**d, **extra, "category_id": cat, "task": "sem_seg"})
    return out


def _convert_segment(seg: dict, meta: dict) -> dict:
    seg = dict(seg)
    cid = seg["category_id"]
    if cid in meta["thing_dataset_id_to_contiguous_id"]:
        seg["category_id"] = meta["thing_dataset_id_to_contiguous_id"][cid]
        seg["isthing"] = True
    else:
        seg["category_id"] = meta["stuff_dataset_id_to_contiguous_id"][cid]
        seg["isthing"] = False
    seg.setdefault("iscrowd", 0)
    return seg


def load_panoptic(json_file: str, image_root: str, pan_root: str, sem_root: str | None,
                  meta: dict, *, image_exts: tuple[str, ...] = IMAGE_EXTS) -> list[dict[str, Any]]:
    """COCO-panoptic-format JSON + PNGs (+ optional semantic maps) → dicts with ``segments_info``
    in contiguous ids. Segments of categories outside ``meta`` are dropped (FreeSeg's rule).
    Every annotation gives a dict, its files there or not: the loaders drop training samples whose
    files are missing (with a warning) and refuse test data with missing files."""
    info = read_json(json_file, "re-download it or re-run the preparation script")
    return panoptic_records(info, json_file, image_root, pan_root, sem_root, meta, image_exts=image_exts)


def panoptic_records(info: dict, json_file: str, image_root: str, pan_root: str, sem_root: str | None,
                     meta: dict, *, image_exts: tuple[str, ...] = IMAGE_EXTS) -> list[dict[str, Any]]:
    """:func:`load_panoptic` of the JSON ``json_file`` already read into ``info``."""
    images = _stem_map(image_root, image_exts)
    known = meta["stuff_dataset_id_to_contiguous_id"]
    out = []
    for ann in info["annotations"]:
        stem = os.path.splitext(ann["file_name"])[0]
        pan = os.path.join(pan_root, ann["file_name"])
        sem = os.path.join(sem_root, stem + ".png") if sem_root else None
        rec = {
            "file_name": images.get(stem, os.path.join(image_root, stem + ".jpg")),  # COCO's images are .jpg
            "image_id": ann["image_id"],
            "pan_seg_file_name": pan,
            "segments_info": [_convert_segment(s, meta) for s in ann["segments_info"] if s["category_id"] in known],
        }
        if sem:
            rec["sem_seg_file_name"] = sem
        out.append(rec)
    if not out:
        raise FreeSegError(f"{json_file} lists no annotations; re-download it or re-run the preparation script")
    out.sort(key=lambda d: os.path.basename(d["pan_seg_file_name"]))
    logger.info("Loaded %d panoptic images from %s", len(out), pan_root)
    return out


def flatten_full_task(sem: list[dict], pan: list[dict]) -> list[dict[str, Any]]:
    """Stage-1 samples for all tasks (FreeSeg's ``load_full_binary_mask``): semantic samples as
    given, one ``ins_seg`` sample per non-crowd thing segment, one ``pan_seg`` per non-crowd
    segment. Each sample carries the segment's ``id`` (panoptic id) and contiguous ``category_id``."""
    out = list(sem)
    for task, keep in (("ins_seg", lambda s: s["isthing"]), ("pan_seg", lambda s: True)):
        for d in pan:
            for seg in d["segments_info"]:
                if not seg.get("iscrowd", 0) and keep(seg):
                    out.append({
                        **seg, "task": task, "file_name": d["file_name"], "image_id": d["image_id"],
                        "pan_seg_file_name": d["pan_seg_file_name"],
                        "sem_seg_file_name": d.get("sem_seg_file_name"),
                    })
    return out
