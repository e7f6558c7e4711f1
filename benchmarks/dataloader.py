#!/usr/bin/env python3
"""Training-loader throughput (images/s) at 640×640 crops with FreeSeg's full-task augmentation.

The data set is generated in a temporary folder: N JPEG photos-like images (smooth random colour
fields, 480×640, quality 90), each with a COCO-Stuff-like label map (8 stuff bands + 6 thing
rectangles from 20 classes) and the matching COCO panoptic PNG + segments_info (what
``prepare_coco_alldata`` writes). The loader is FreeSeg's stage-2 recipe: shortest edge from
[320..960], 640 category-area crop, SSD colour jitter, flip, pad to 640, and the three target sets.

    .venv/bin/python benchmarks/dataloader.py [--images 48] [--workers 2] [--batch 8] [--batches 12]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
from PIL import Image

from freeseg.data.loaders import build_train_loader_from
from freeseg.data.mappers import FullTaskMapper
from freeseg.data.transforms import ColorAugSSD, RandomCropCategoryAreaConstraint, RandomFlip, ResizeShortestEdge


def generate(root: str, n: int, h: int = 480, w: int = 640) -> list[dict]:
    rng = np.random.default_rng(0)
    dicts = []
    for i in range(n):
        small = rng.integers(0, 255, (h // 32, w // 32, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        img.save(f"{root}/{i}.jpg", quality=90)
        sem = np.zeros((h, w), np.uint8)
        pan = np.zeros((h, w), np.int64)
        segs = []
        for k, y in enumerate(np.linspace(0, h, 9).astype(int)[:-1]):
            c = int(rng.integers(10, 20))
            sem[y:, :] = c
            pan[y:, :] = 1000 + k
        for k in range(8):
            segs.append({"id": 1000 + k, "category_id": int(sem[int(np.linspace(0, h, 9)[k]) + 1, 0]), "iscrowd": 0, "isthing": False})
        for k in range(6):
            y0, x0 = int(rng.integers(0, h - 100)), int(rng.integers(0, w - 100))
            c = int(rng.integers(0, 10))
            sem[y0:y0 + 90, x0:x0 + 90] = c
            pan[y0:y0 + 90, x0:x0 + 90] = 1 + k
            segs.append({"id": 1 + k, "category_id": c, "iscrowd": 0, "isthing": True})
        Image.fromarray(sem).save(f"{root}/{i}_sem.png")
        rgb = np.stack([pan % 256, pan // 256 % 256, pan // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(f"{root}/{i}_pan.png")
        dicts.append({"file_name": f"{root}/{i}.jpg", "sem_seg_file_name": f"{root}/{i}_sem.png",
                      "pan_seg_file_name": f"{root}/{i}_pan.png", "segments_info": segs, "image_id": i})
    return dicts


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=12)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        dicts = generate(root, a.images)
        augs = [ResizeShortestEdge([int(x * 0.1 * 640) for x in range(5, 16)], 2560, "choice"),
                RandomCropCategoryAreaConstraint("absolute", (640, 640), 1.0, 255), ColorAugSSD(), RandomFlip()]
        mapper = FullTaskMapper(augmentations=augs, num_classes=20, size_divisibility=640)
        loader = build_train_loader_from(dicts, mapper, total_batch_size=a.batch, num_workers=a.workers, seed=0)
        it = iter(loader)
        next(it)  # warm-up: worker start
        t0 = time.perf_counter()
        n = 0
        for _ in range(a.batches):
            batch = next(it)
            n += len(batch)
            assert batch[0]["image"].shape == (3, 640, 640)
        dt = time.perf_counter() - t0
        del it, loader  # stop the workers before the folder goes away
    cpu = platform.processor() or platform.machine()
    print(f"dataloader: {n / dt:.1f} images/s (640x640 crops, full-task targets, {a.workers} workers, "
          f"batch {a.batch}, {n} images in {dt:.1f}s; {os.cpu_count()} CPU cores, {cpu})")


if __name__ == "__main__":
    main()
