"""Tiny data sets written in the published on-disk formats (COCO-Stuff stuffthingmaps, COCO
panoptic PNG+JSON, VOC SegmentationClassAug + lists, ADEChallengeData2016 incl. instance maps)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 48, 64


def _rgb(rng: np.random.Generator, h: int = H, w: int = W) -> Image.Image:
    base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.BILINEAR)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def coco_image(i: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(COCO-Stuff map (id − 1), panoptic ids, segments_info) for image ``i``.

    Rows 0-15 sky (stuff map: sky-other 157; panoptic: sky-other-merged 187), rows 16-31 grass
    (124; grass-merged 193) left of a road (149 in both), rows 32-47: person (1), cow (21), a crowd
    person; the rest unlabelled. Image 2 holds only unseen classes (cow, grass)."""
    stuff = np.full((H, W), 255, np.uint8)
    pan = np.zeros((H, W), np.int64)
    segs = []
    split = 24 + 4 * i
    if i == 2:
        stuff[16:32, :] = 123
        pan[16:32, :] = 7001
        segs.append({"id": 7001, "category_id": 193, "iscrowd": 0})
        stuff[32:46, 10:30] = 20
        pan[32:46, 10:30] = 5001
        segs.append({"id": 5001, "category_id": 21, "iscrowd": 0})
        return stuff, pan, segs
    stuff[:16] = 156
    pan[:16] = 9001
    segs.append({"id": 9001, "category_id": 187, "iscrowd": 0})
    stuff[16:32, :split] = 123
    pan[16:32, :split] = 7001
    segs.append({"id": 7001, "category_id": 193, "iscrowd": 0})
    stuff[16:32, split:] = 148
    pan[16:32, split:] = 7002
    segs.append({"id": 7002, "category_id": 149, "iscrowd": 0})
    stuff[32:46, 4:20] = 0
    pan[32:46, 4:20] = 301
    segs.append({"id": 301, "category_id": 1, "iscrowd": 0})
    stuff[34:46, 28:50] = 20
    pan[34:46, 28:50] = 5001
    segs.append({"id": 5001, "category_id": 21, "iscrowd": 0})
    stuff[36:44, 54:60] = 0
    pan[36:44, 54:60] = 302
    segs.append({"id": 302, "category_id": 1, "iscrowd": 1})
    return stuff, pan, segs


def write_coco(root: Path, n_train: int = 3, n_val: int = 2) -> Path:
    coco = root / "coco"
    rng = np.random.default_rng(0)
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        for d in (split, f"stuffthingmaps/{split}", f"panoptic_{split}", "annotations"):
            (coco / d).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            stem = f"{(100 if split == 'val2017' else 0) + i + 1:012d}"
            _rgb(rng).save(coco / split / f"{stem}.jpg", quality=95)
            stuff, pan, segs = coco_image(i)
            Image.fromarray(stuff).save(coco / "stuffthingmaps" / split / f"{stem}.png")
            Image.fromarray(id2rgb(pan)).save(coco / f"panoptic_{split}" / f"{stem}.png")
            for s in segs:
                ys, xs = np.nonzero(pan == s["id"])
                s.update(area=int(len(xs)), bbox=[int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)])
            images.append({"id": int(stem), "file_name": f"{stem}.jpg", "height": H, "width": W})
            anns.append({"image_id": int(stem), "file_name": f"{stem}.png", "segments_info": segs})
        cats = [{"id": 1, "name": "person", "isthing": 1}, {"id": 21, "name": "cow", "isthing": 1},
                {"id": 149, "name": "road", "isthing": 0}, {"id": 187, "name": "sky-other-merged", "isthing": 0},
                {"id": 193, "name": "grass-merged", "isthing": 0}]
        with open(coco / "annotations" / f"panoptic_{split}.json", "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    return coco


def write_voc(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClassAug").mkdir()
    rng = np.random.default_rng(1)
    stems = {"train": [f"2007_{i:06d}" for i in range(n_train)], "val": [f"2008_{i:06d}" for i in range(n_val)]}
    for split, names in stems.items():
        for k, stem in enumerate(names):
            _rgb(rng).save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
            lab = np.zeros((H, W), np.uint8)  # background
            lab[5:20, 5:30] = 15  # person (seen)
            lab[25:40, 30:60] = 17 if k % 2 == 0 else 3  # sheep (unseen) or bird (seen)
            lab[25:40, 29] = 255  # boundary
            if k == 1:
                lab[:] = 0  # only background: all-ignore after conversion, skipped
            Image.fromarray(lab).save(voc / "SegmentationClassAug" / f"{stem}.png")
        (voc / f"{split}.txt").write_text("\n".join(names) + "\n")
    return voc


ADE_MAPPING = "Instacne100 SceneParsing150 FullADE20K\n1 8 165\n2 16 2684\n3 13 1831\n"


def write_ade(root: Path, n_train: int = 2, n_val: int = 2) -> Path:
    """Semantic: wall (1), sky (3), grass (10, unseen), person (13), table (16, unseen thing), 0 = other.
    Instances: person (instance class 3), table (2)."""
    ade = root / "ADEChallengeData2016"
    rng = np.random.default_rng(2)
    for split, n in (("training", n_train), ("validation", n_val)):
        for d in ("images", "annotations", "annotations_instance"):
            (ade / d / split).mkdir(parents=True)
        for i in range(n):
            stem = f"ADE_{split[:5]}_{i + 1:08d}"
            _rgb(rng).save(ade / "images" / split / f"{stem}.jpg", quality=95)
            sem = np.zeros((H, W), np.uint8)
            ins = np.zeros((H, W, 3), np.uint8)
            sem[:12] = 3
            sem[12:24] = 1
            sem[24:, : 32 + i] = 10
            sem[30:44, 4:14] = 13
            ins[30:44, 4:14] = (3, 1, 0)
            sem[30:44, 20:28] = 13
            ins[30:44, 20:28] = (3, 2, 0)
            sem[26:40, 40:60] = 16
            ins[26:40, 40:60] = (2, 3, 0)
            Image.fromarray(sem).save(ade / "annotations" / split / f"{stem}.png")
            Image.fromarray(ins).save(ade / "annotations_instance" / split / f"{stem}.png")
    (ade / "ade20k_instance_catid_mapping.txt").write_text(ADE_MAPPING)
    return ade


def corrupt_file(path: str | os.PathLike) -> None:
    """Truncate an image file to a few bytes (a broken download)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: min(40, len(data) // 4)])
