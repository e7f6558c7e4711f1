"""FreeSeg's ``prepare_coco_alldata.py``: COCO-Stuff label maps + COCO panoptic → full-task data.

For each split variant ("", "_base", "_novel"):

* ``stuffthingmaps_panoptic_detectron2/<split><v>/*.png``: the COCO-Stuff map remapped to the
  variant's contiguous ids (as ``prepare_coco_stuff_164k_sem_seg``); all-ignore maps skipped.
* ``panoptic_detectron2/<split><v>/*.png`` + ``panoptic_<split><v>.json``: the original panoptic
  segments whose category is a COCO-Stuff class of the variant, plus, for each stuff class of the
  variant that the image's panoptic annotation lacks, a new segment from the COCO-Stuff map (id
  = label × 65793, the grey-to-RGB id the original used, or the next free id on a clash).

Fixes (documented): ``segments_info`` edits are returned by the workers instead of being written
to a global that multiprocessing lost (the original JSON kept the original segments); areas and
boxes are recomputed from the written PNG (stuff segments overwrite pixels) and boxes are COCO
XYWH (the original wrote XYXY for new segments); JSON ``categories`` = the variant's COCO-Stuff
classes and only written images are listed.

``panoptic_semseg_<split>`` (optional, Mask2Former's semantic maps of COCO panoptic 133, for
``coco_2017_*_panoptic_with_sem_seg``): each segment's contiguous class, 255 = void.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from ...utils.colors import id_to_rgb, rgb_to_id
from ...utils.errors import FreeSegError
from ..builtin.classes import load_classes
from ..loading import read_json
from ..mappers.common import read_panoptic_ids
from .common import (
    check_published,
    list_files,
    parallel_map,
    read_uint8_labels,
    save_png_once,
    split_luts,
    verify_counts,
    write_json,
    write_label_counts,
)
from .semantic import COCO_EXPECTED

GREY_TO_ID = 1 + 256 + 256 * 256


rgb2id, id2rgb = rgb_to_id, id_to_rgb  # the COCO panoptic colour encoding, under panopticapi's names


def segment_stats(mask: np.ndarray) -> tuple[int, list[int]]:
    """(area, COCO bbox [x, y, w, h]) of a bool mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    return int(np.count_nonzero(mask)), [x0, y0, int(cols[-1]) - x0 + 1, int(rows[-1]) - y0 + 1]


def build_panoptic(stuff: np.ndarray, pan_ids: np.ndarray, segments: list[dict], keep_ids: set[int]
                   ) -> tuple[np.ndarray, list[dict]]:
    """The variant's panoptic map and segments (COCO-Stuff category ids; ``stuff`` = id − 1 map)."""
    out = np.zeros_like(pan_ids)
    kept: list[dict] = []
    for seg in segments:
        if seg["category_id"] in keep_ids:
            out[pan_ids == seg["id"]] = seg["id"]
            kept.append(dict(seg))
    present = {s["category_id"] for s in segments}
    used = {s["id"] for s in segments}
    for cid in sorted(c for c in keep_ids if c > 91 and c not in present):
        m = stuff == cid - 1
        if not m.any():
            continue
        sid = (cid - 1) * GREY_TO_ID
        while sid in used:
            sid += 1
        used.add(sid)
        out[m] = sid
        kept.append({"id": int(sid), "category_id": int(cid), "iscrowd": 0})
    final = []
    for seg in kept:
        m = out == seg["id"]
        if m.any():
            seg["area"], seg["bbox"] = segment_stats(m)
            final.append(seg)
    return out, final


def _job(src: str, pan_root: str, anns: dict[str, dict], variants: dict[str, tuple[np.ndarray, set[int], str, str]]) -> dict:
    """One image, every variant: returns ``{"labels": {sem path: labels}, "anns": {v: annotation}}``."""
    stuff = read_uint8_labels(src)
    name = os.path.basename(src)
    ann = anns.get(name)
    if ann is None:
        raise FreeSegError(f"{name} has a COCO-Stuff map but no entry in the panoptic JSON; use matching splits")
    pan_path = os.path.join(pan_root, ann["file_name"])
    pan_ids = rgb2id(np.asarray(Image.open(pan_path).convert("RGB")))
    if pan_ids.shape != stuff.shape:
        raise FreeSegError(f"{pan_path} is {pan_ids.shape} but {src} is {stuff.shape}")
    res: dict[str, Any] = {"labels": {}, "anns": {}}
    for v, (lut, keep_ids, sem_dir, pan_dir) in variants.items():
        sem = lut[stuff]
        sem_path = os.path.join(sem_dir, name)
        present = np.unique(sem)
        present = [int(x) for x in present if x != 255]
        if not present:
            res["labels"][sem_path] = None
            continue
        res["labels"][sem_path] = present
        save_png_once(sem, sem_path)
        pan, segs = build_panoptic(stuff, pan_ids, ann["segments_info"], keep_ids)
        save_png_once(id2rgb(pan), os.path.join(pan_dir, name))
        res["anns"][v] = {"image_id": ann["image_id"], "file_name": name, "segments_info": segs}
    return res


def prepare_coco_alldata(coco_root: str, out_dir: str | None = None, nproc: int = 4, subset: bool = False,
                         panoptic_semseg: bool = False) -> dict[str, int]:
    data = load_classes("coco_stuff_171")
    cats = data["categories"]
    unseen = set(data["unseen_ids"])
    luts = split_luts([c["id"] for c in cats], unseen, lambda i: i - 1)
    keep = {"": {c["id"] for c in cats}, "_base": {c["id"] for c in cats if c["id"] not in unseen},
            "_novel": {c["id"] for c in cats if c["id"] in unseen}}
    out_root = out_dir or coco_root
    fix = "download COCO-Stuff stuffthingmaps and COCO panoptic annotations into the coco folder"
    results, n_inputs = [], {}
    for split in ("train2017", "val2017"):
        files = list_files(os.path.join(coco_root, "stuffthingmaps", split), ".png", "COCO-Stuff label", fix)
        n_inputs[split] = len(files)
        check_published({split: len(files)}, None if subset else COCO_EXPECTED)
        json_path = os.path.join(coco_root, "annotations", f"panoptic_{split}.json")
        if not os.path.exists(json_path):
            raise FreeSegError(f"{json_path} not found; {fix}")
        pan_json = read_json(json_path, fix)
        variants = {}
        for v in luts:
            sem_dir = os.path.join(out_root, "stuffthingmaps_panoptic_detectron2", split + v)
            pan_dir = os.path.join(out_root, "panoptic_detectron2", split + v)
            os.makedirs(sem_dir, exist_ok=True)
            os.makedirs(pan_dir, exist_ok=True)
            variants[v] = (luts[v], keep[v], sem_dir, pan_dir)
        anns = {os.path.splitext(a["file_name"])[0] + ".png": a for a in pan_json["annotations"]}
        res = parallel_map(partial(_job, pan_root=os.path.join(coco_root, f"panoptic_{split}"), anns=anns,
                                   variants=variants), files, nproc, f"coco-alldata {split}")
        images = {im["id"]: im for im in pan_json["images"]}
        for v in luts:
            v_anns = [r["anns"][v] for r in res if v in r["anns"]]
            out = {
                "info": pan_json.get("info", {}), "licenses": pan_json.get("licenses", []),
                "images": [images[a["image_id"]] for a in v_anns if a["image_id"] in images],
                "annotations": v_anns,
                "categories": [{"id": c["id"], "name": c["name"], "isthing": c["isthing"], "color": c["color"]}
                               for c in cats if c["id"] in keep[v]],
            }
            write_json(out, os.path.join(out_root, "panoptic_detectron2", f"panoptic_{split}{v}.json"))
        results += [r["labels"] for r in res]
        if panoptic_semseg:
            semseg_from_panoptic(coco_root, split, nproc)
    counts = write_label_counts(results)
    verify_counts(counts, n_inputs, None if subset else COCO_EXPECTED)
    for folder, n in counts.items():  # the panoptic PNGs must match the semantic maps one to one
        pan_folder = folder.replace("stuffthingmaps_panoptic_detectron2", "panoptic_detectron2")
        on_disk = len([f for f in os.listdir(pan_folder) if f.endswith(".png")])
        if on_disk != n:
            raise FreeSegError(f"{pan_folder} holds {on_disk} PNGs but {n} were expected; remove it and re-run")
    return counts


def _semseg_job(ann: dict, pan_root: str, out_dir: str, cat_map: dict[int, int]) -> int:
    out_path = os.path.join(out_dir, os.path.splitext(ann["file_name"])[0] + ".png")
    if os.path.exists(out_path):
        return 1
    ids = read_panoptic_ids(os.path.join(pan_root, ann["file_name"]))
    sem = np.full(ids.shape, 255, dtype=np.uint8)
    for seg in ann["segments_info"]:
        sem[ids == seg["id"]] = cat_map[seg["category_id"]]
    save_png_once(sem, out_path)
    return 1


def write_semantic_maps(annotations: list[dict], pan_root: str, out_dir: str, cat_map: dict[int, int],
                        nproc: int, desc: str) -> int:
    """One semantic map per panoptic annotation into ``out_dir`` (same stem, .png): each segment's
    class ``cat_map[category_id]``, 255 where no segment is; maps already there are kept."""
    os.makedirs(out_dir, exist_ok=True)
    done = parallel_map(partial(_semseg_job, pan_root=pan_root, out_dir=out_dir, cat_map=cat_map),
                        annotations, nproc, desc)
    return sum(done)


def semseg_from_panoptic(coco_root: str, split: str, nproc: int = 4) -> int:
    """``panoptic_semseg_<split>/*.png`` from ``panoptic_<split>`` + its JSON (133 contiguous ids)."""
    cats = load_classes("coco_panoptic_133")["categories"]
    anns = read_json(os.path.join(coco_root, "annotations", f"panoptic_{split}.json"),
                     "re-download COCO's panoptic annotations")["annotations"]
    return write_semantic_maps(anns, os.path.join(coco_root, f"panoptic_{split}"),
                               os.path.join(coco_root, f"panoptic_semseg_{split}"),
                               {c["id"]: i for i, c in enumerate(cats)}, nproc, f"panoptic semseg {split}")
