"""COCO instance annotations (polygons or RLE, possibly overlapping) → the panoptic PNGs and
semantic maps that FreeSeg's all-task training reads.

Each image's instances are painted largest first, so where two overlap the smaller one keeps
its pixels (a person in front of a car keeps the person); an instance left with no pixel is
dropped. Crowd regions become crowd segments (no training target, as in COCO panoptic).
Pixels of no instance are void (panoptic id 0, semantic 255): instance data sets have no stuff.

The conversion runs once; its segments are cached in a JSON next to the PNG folder that also
records which annotation file (size, modification time) and class list they came from, so that
an edited file or a reordered class list is converted again.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Any, Callable

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from ...evaluation.coco_utils import segmentation_to_rle
from ...utils.colors import id_to_rgb
from ...utils.files import atomic_write
from ..loading import read_json
from .common import parallel_map, write_json
from .coco_alldata import segment_stats


def _write_png(array: np.ndarray, path: str) -> None:
    """Write (over an older conversion's file: unlike ``save_png_once``), atomically."""
    with atomic_write(path, durable=False) as f:
        Image.fromarray(array).save(f, format="PNG")


def _image_job(item: tuple[dict, list[dict]], pan_root: str, sem_root: str, class_of: dict[int, int]) -> dict:
    """One image: writes its panoptic PNG and semantic map, returns its panoptic annotation."""
    image, anns = item
    h, w = int(image["height"]), int(image["width"])
    masks = [mask_util.decode(segmentation_to_rle(a["segmentation"], h, w)).astype(bool) for a in anns]
    ids = np.zeros((h, w), np.int64)
    order = sorted(range(len(anns)), key=lambda k: -int(masks[k].sum()))
    for sid, k in enumerate(order, start=1):
        ids[masks[k]] = sid
    sem = np.full((h, w), 255, np.uint8)
    segments = []
    for sid, k in enumerate(order, start=1):
        mask = ids == sid
        if not mask.any():
            continue
        sem[mask] = class_of[anns[k]["category_id"]]
        area, bbox = segment_stats(mask)
        segments.append({"id": sid, "category_id": anns[k]["category_id"], "iscrowd": int(anns[k].get("iscrowd", 0)),
                         "area": area, "bbox": bbox})
    name = os.path.splitext(os.path.basename(image["file_name"]))[0] + ".png"
    _write_png(id_to_rgb(ids), os.path.join(pan_root, name))
    _write_png(sem, os.path.join(sem_root, name))
    return {"image_id": image["id"], "file_name": name, "segments_info": segments}


def _source(path: str, class_of: dict[int, int]) -> dict[str, Any]:
    """What a conversion depends on: the JSON file (path, size, time) and the class of each category."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "classes": [[int(k), int(v)] for k, v in sorted(class_of.items())]}


def panoptic_from_instances(read: Callable[[], dict], json_file: str, pan_root: str, sem_root: str,
                            class_of: dict[int, int], nproc: int = 1) -> dict:
    """The COCO instance annotations of ``json_file`` as panoptic PNGs in ``pan_root`` and
    semantic maps (class ``class_of[category_id]``) in ``sem_root``, both named after the images;
    returns ``{"annotations": [{image_id, file_name, segments_info}]}`` in COCO panoptic form,
    cached in ``<pan_root>.json`` and used again while ``json_file`` and ``class_of`` are the
    same. ``read()`` gives the JSON's content (checked), called only when converting."""
    cache = pan_root.rstrip("/\\") + ".json"
    source = _source(json_file, class_of)
    if os.path.isfile(cache):
        cached = read_json(cache, "delete it to convert the instances again")
        if cached.get("source") == source:
            return cached
    info = read()
    by_image: dict[Any, list[dict]] = {im["id"]: [] for im in info["images"]}
    for a in info["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for folder in (pan_root, sem_root):
        os.makedirs(folder, exist_ok=True)
    annotations = parallel_map(partial(_image_job, pan_root=pan_root, sem_root=sem_root, class_of=class_of),
                               [(im, by_image[im["id"]]) for im in info["images"]], nproc,
                               f"instances to panoptic ({os.path.basename(json_file)})")
    out = {"source": source, "annotations": annotations}
    write_json(out, cache)
    return out
