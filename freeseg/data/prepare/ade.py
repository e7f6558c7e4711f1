"""ADE20K-150 panoptic and instance annotations, full / base (135) / novel (15)
(FreeSeg's ``prepare_ade20k_{pan,ins}_seg_novel.py``; the full variant is Mask2Former's).

Inputs (``ADEChallengeData2016``): ``images/<split>/*.jpg``, ``annotations/<split>/*.png``
(0 = other, c + 1 = class c), ``annotations_instance/<split>/*.png`` (R = instance-challenge class,
G = instance id) and ``ade20k_instance_catid_mapping.txt`` (instance class → SceneParsing class,
shipped with Mask2Former / the ADE instance challenge).

Panoptic: stuff classes of the variant from the semantic map, then the variant's thing instances
painted over them (the original's order). Category ids are ADE-150 ids (0-based), as the
original. Differences: segment ids are 1..n per image (the original drew random colours), areas
and boxes are computed on the final map, the full 150-class variant is written too, and each
JSON lists only the variant's categories.
Instance: COCO JSON with RLE masks of the variant's thing instances.
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ...utils.errors import FreeSegError
from ..builtin.classes import load_classes
from .coco_alldata import id2rgb, segment_stats
from .common import list_files, parallel_map, save_png_once, write_json

ADE_EXPECTED = {"training": 20210, "validation": 2000}
SPLITS = (("train", "training"), ("val", "validation"))


def read_catid_mapping(path: str) -> dict[int, int]:
    """Instance-challenge class (0-based) → ADE-150 class (0-based)."""
    if not os.path.exists(path):
        raise FreeSegError(
            f"{path} not found; copy ade20k_instance_catid_mapping.txt (from Mask2Former's datasets/) there "
            "or pass --mapping"
        )
    out = {}
    with open(path) as f:
        for i, line in enumerate(f):
            parts = line.split()
            if i == 0 or len(parts) < 2:
                continue
            out[int(parts[0]) - 1] = int(parts[1]) - 1
    return out


def _image_segments(stem: str, root: str, split_dir: str, variant: set[int], things: set[int],
                    map_id: dict[int, int]) -> tuple[np.ndarray, list[dict], list[tuple[int, np.ndarray]]]:
    sem = np.asarray(Image.open(os.path.join(root, "annotations", split_dir, stem + ".png"))).astype(np.int64) - 1
    ins = np.asarray(Image.open(os.path.join(root, "annotations_instance", split_dir, stem + ".png")))
    if ins.ndim != 3 or ins.shape[:2] != sem.shape:
        raise FreeSegError(f"instance map of {stem} is {ins.shape}; expected an RGB PNG of size {sem.shape}")
    pan = np.zeros(sem.shape, dtype=np.int64)
    cats: dict[int, int] = {}
    for c in np.unique(sem):
        if c < 0 or c not in variant or c in things:
            continue
        sid = len(cats) + 1
        pan[sem == c] = sid
        cats[sid] = int(c)
    instances = []
    ins_cls, ins_id = ins[..., 0].astype(np.int64) - 1, ins[..., 1]
    for k in np.unique(ins_id):
        if k == 0:
            continue
        m = ins_id == k
        cls = np.unique(ins_cls[m])
        if len(cls) != 1:
            raise FreeSegError(f"instance {k} of {stem} spans several classes {cls.tolist()}; the instance map is corrupt")
        c = map_id.get(int(cls[0]))
        if c is None or c not in variant:
            continue
        sid = len(cats) + 1
        pan[m] = sid
        cats[sid] = c
        instances.append((c, m))
    segs = []
    for sid, c in cats.items():
        m = pan == sid
        if m.any():
            area, bbox = segment_stats(m)
            segs.append({"id": sid, "category_id": c, "area": area, "bbox": bbox, "iscrowd": 0})
    return pan, segs, instances


def _job(stem: str, root: str, split_dir: str, variants: dict[str, tuple[set[int], str]], things: set[int],
         map_id: dict[int, int], write_pan: bool) -> dict:
    w, h = Image.open(os.path.join(root, "images", split_dir, stem + ".jpg")).size
    out = {"image": {"id": stem, "file_name": stem + ".jpg", "width": w, "height": h}, "pan": {}, "ins": {}}
    for v, (variant, pan_dir) in variants.items():
        pan, segs, instances = _image_segments(stem, root, split_dir, variant, things, map_id)
        if write_pan:
            save_png_once(id2rgb(pan), os.path.join(pan_dir, stem + ".png"))
            out["pan"][v] = {"image_id": stem, "file_name": stem + ".png", "segments_info": segs}
        else:
            anns = []
            for c, m in instances:
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                area, bbox = segment_stats(m)
                anns.append({"image_id": stem, "category_id": c, "segmentation": rle, "area": area,
                             "bbox": bbox, "iscrowd": 0})
            out["ins"][v] = anns
    return out


def prepare_ade20k_panoptic(ade_root: str, *, instances: bool = False, mapping: str | None = None,
                            nproc: int = 4, subset: bool = False) -> dict[str, int]:
    """Write ``ade20k_panoptic_<split><v>/`` + ``.json`` (or, with ``instances``,
    ``ade20k_instance_<split><v>.json``) for v in "", "_base", "_novel"; returns file counts."""
    data = load_classes("ade20k_150")
    cats = data["categories"]
    unseen = set(data["unseen_ids"])
    map_id = read_catid_mapping(mapping or os.path.join(ade_root, "ade20k_instance_catid_mapping.txt"))
    things = set(map_id.values())
    ids = {"": {c["id"] for c in cats}, "_base": {c["id"] for c in cats if c["id"] not in unseen},
           "_novel": {c["id"] for c in cats if c["id"] in unseen}}
    counts = {}
    for split, split_dir in SPLITS:
        images = list_files(os.path.join(ade_root, "images", split_dir), ".jpg", "ADE20K image",
                            "unzip ADEChallengeData2016.zip into the data set root")
        if not subset and len(images) != ADE_EXPECTED[split_dir]:
            raise FreeSegError(f"read {len(images)} {split_dir} images, the published set has "
                               f"{ADE_EXPECTED[split_dir]}; complete the download or pass --subset")
        stems = [os.path.splitext(os.path.basename(p))[0] for p in images]
        variants = {}
        for v in ids:
            pan_dir = os.path.join(ade_root, f"ade20k_panoptic_{split}{v}")
            if not instances:
                os.makedirs(pan_dir, exist_ok=True)
            variants[v] = (ids[v], pan_dir)
        res = parallel_map(partial(_job, root=ade_root, split_dir=split_dir, variants=variants, things=things,
                                   map_id=map_id, write_pan=not instances), stems, nproc, f"ade20k {split}")
        for v in ids:
            v_cats = [{**c, "isthing": int(c["id"] in things)} for c in cats if c["id"] in ids[v]]
            if instances:
                anns = [a for r in res for a in r["ins"][v]]
                for k, a in enumerate(anns):
                    a["id"] = k + 1
                out = {"images": [r["image"] for r in res], "annotations": anns,
                       "categories": [c for c in v_cats if c["isthing"]]}
                path = os.path.join(ade_root, f"ade20k_instance_{split}{v}.json")
                counts[path] = len(anns)
            else:
                out = {"images": [r["image"] for r in res], "annotations": [r["pan"][v] for r in res],
                       "categories": v_cats}
                path = os.path.join(ade_root, f"ade20k_panoptic_{split}{v}.json")
                n = len([f for f in os.listdir(variants[v][1]) if f.endswith(".png")])
                if n != len(stems):
                    raise FreeSegError(f"{variants[v][1]} holds {n} PNGs for {len(stems)} images; remove it and re-run")
                counts[path] = len(stems)
            write_json(out, path)
    return counts
