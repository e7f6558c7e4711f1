"""Semantic label-map preparation: COCO-Stuff 171, PASCAL VOC 20 and ADE20K-150, each into
full / base (seen) / novel (unseen) label maps with contiguous ids (255 = ignore), plus the
``<folder>_label_count.json`` files the stage-1 loaders read.

Outputs match FreeSeg's scripts; fixes: VOC ``val_base`` is written (the original ran the
train_base conversion twice instead), label-count files are written where the loader reads them,
existing outputs are skipped, and counts are verified at the end.
"""
from __future__ import annotations

import logging
import os
from functools import partial

import numpy as np

from ...utils.errors import FreeSegError
from ..builtin.classes import load_classes
from .common import (
    check_published,
    list_files,
    parallel_map,
    read_uint8_labels,
    split_luts,
    verify_counts,
    write_json,
    write_label_counts,
    write_remapped,
)

logger = logging.getLogger(__name__)

COCO_EXPECTED = {"train2017": 118287, "val2017": 5000}
VOC_EXPECTED = {"train": 10582, "val": 1449}
ADE_EXPECTED = {"training": 20210, "validation": 2000}


def _run(jobs: dict[str, list[str]], out_root: str, luts: dict[str, np.ndarray], nproc: int,
         expected: dict[str, int] | None, name: str) -> dict[str, int]:
    check_published({k: len(v) for k, v in jobs.items()}, expected)
    results = []
    for split, files in jobs.items():
        outputs = {s: os.path.join(out_root, split + s) for s in luts}
        for d in outputs.values():
            os.makedirs(d, exist_ok=True)
        results += parallel_map(partial(_job, outputs=outputs, luts=luts), files, nproc, f"{name} {split}")
    counts = write_label_counts(results)
    verify_counts(counts, {k: len(v) for k, v in jobs.items()}, expected)
    return counts


def _job(src: str, outputs: dict[str, str], luts: dict[str, np.ndarray]) -> dict:
    """Read one label map, write one remapped map per split variant (module level: picklable)."""
    arr = read_uint8_labels(src)
    return write_remapped(arr, {os.path.join(outputs[s], os.path.basename(src)): lut for s, lut in luts.items()})


def prepare_coco_stuff(coco_root: str, out_dir: str | None = None, nproc: int = 4, subset: bool = False) -> dict[str, int]:
    """``coco/stuffthingmaps/{train2017,val2017}/*.png`` (COCO id − 1, 255 unlabelled) →
    ``stuffthingmaps_detectron2/<split>{,_base,_novel}`` (0..170 / 0..155 / 0..14)."""
    data = load_classes("coco_stuff_171")
    luts = split_luts([c["id"] for c in data["categories"]], set(data["unseen_ids"]), lambda i: i - 1)
    fix = "download COCO-Stuff's stuffthingmaps_trainval2017.zip and unzip it into coco/stuffthingmaps/"
    jobs = {s: list_files(os.path.join(coco_root, "stuffthingmaps", s), ".png", "COCO-Stuff label", fix)
            for s in ("train2017", "val2017")}
    out_root = os.path.join(out_dir or coco_root, "stuffthingmaps_detectron2")
    return _run(jobs, out_root, luts, nproc, None if subset else COCO_EXPECTED, "coco-stuff")


def _read_list(path: str) -> list[str]:
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def prepare_voc(voc_root: str, out_dir: str | None = None, nproc: int = 4, subset: bool = False) -> dict[str, int]:
    """``VOC2012/SegmentationClassAug/*.png`` listed in ``train.txt`` / ``val.txt`` (VOC root, or
    ``ImageSets/Segmentation/{train_aug,train}.txt``) → ``annotations_detectron2/{train,val}{,_base,_novel}``:
    background 0 → 255; 1..20 → 0..19; seen 1..15 → 0..14; unseen 16..20 → 0..4."""
    data = load_classes("voc_20")
    luts = split_luts([c["id"] for c in data["categories"]], set(data["unseen_ids"]), lambda i: i)
    seg = os.path.join(voc_root, "SegmentationClassAug")
    if not os.path.isdir(seg):
        raise FreeSegError(f"{seg} not found; download SegmentationClassAug (SBD-augmented VOC labels) into VOC2012/")
    jobs = {}
    for split, names in (("train", ("train.txt", "ImageSets/Segmentation/train_aug.txt", "ImageSets/Segmentation/train.txt")),
                         ("val", ("val.txt", "ImageSets/Segmentation/val.txt"))):
        lists = [os.path.join(voc_root, n) for n in names if os.path.exists(os.path.join(voc_root, n))]
        if not lists:
            raise FreeSegError(f"no {split} list in {voc_root} (looked for {', '.join(names)}); put the split list there")
        files = [os.path.join(seg, s + ".png") for s in _read_list(lists[0])]
        missing = [f for f in files if not os.path.exists(f)]
        if missing:
            raise FreeSegError(f"{missing[0]} listed in {lists[0]} is missing ({len(missing)} missing in all)")
        jobs[split] = files
    out_root = os.path.join(out_dir or voc_root, "annotations_detectron2")
    return _run(jobs, out_root, luts, nproc, None if subset else VOC_EXPECTED, "voc")


def prepare_ade20k_sem(ade_root: str, out_dir: str | None = None, nproc: int = 4, subset: bool = False) -> dict[str, int]:
    """``ADEChallengeData2016/annotations/{training,validation}/*.png`` (0 = other, 1..150) →
    ``annotations_detectron2/<split>{,_base,_novel}`` (label − 1, seen / unseen remapped contiguously)."""
    data = load_classes("ade20k_150")
    luts = split_luts([c["id"] for c in data["categories"]], set(data["unseen_ids"]), lambda i: i + 1)
    fix = "unzip ADEChallengeData2016.zip into the data set root"
    jobs = {s: list_files(os.path.join(ade_root, "annotations", s), ".png", "ADE20K annotation", fix)
            for s in ("training", "validation")}
    out_root = os.path.join(out_dir or ade_root, "annotations_detectron2")
    return _run(jobs, out_root, luts, nproc, None if subset else ADE_EXPECTED, "ade20k-sem")


def collect_label_counts(gt_dir: str, out_json: str | None = None, nproc: int = 4) -> str:
    """``tools/mask_cls_collect.py``: ``{png basename: sorted labels present (no 255)}``, written by
    default to ``<gt_dir>_label_count.json``, the path the stage-1 loaders read."""
    files = list_files(gt_dir, ".png", "label", "prepare the data set first")
    labels = parallel_map(_labels_of, files, nproc, "label counts")
    out_json = out_json or gt_dir.rstrip("/") + "_label_count.json"
    write_json({os.path.basename(p): l for p, l in zip(files, labels)}, out_json)
    return out_json


def _labels_of(path: str) -> list[int]:
    v = np.unique(read_uint8_labels(path))
    return [int(x) for x in v if x != 255]
