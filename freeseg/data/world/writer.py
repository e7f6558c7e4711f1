"""Write the quickstart world to disk in the layout of FreeSeg's prepared COCO full-task data.

```
<root>/
  {train,val}2017/*.jpg                                          images
  stuffthingmaps_panoptic_detectron2/{split}2017{,_base}/*.png   label maps (contiguous ids, 255 = none)
  panoptic_detectron2/{split}2017{,_base}/*.png                  COCO panoptic PNGs (id = R + 256 G + 256² B)
  panoptic_detectron2/panoptic_{split}2017{,_base}.json          COCO panoptic JSON (category ids 1..17)
  annotations/instances_{split}2017.json                         COCO instances (things, RLE masks)
  annotations/captions_{split}2017.json                          COCO captions
```

``_base`` holds the seen classes only (novel pixels are 255 / void), exactly as
``prepare_coco_alldata.py`` makes them for COCO, so the real loaders, mappers and evaluators
read it like COCO.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util
from tqdm import tqdm

from ..prepare.coco_alldata import id2rgb, segment_stats
from ..prepare.semantic import collect_label_counts
from .classes import WorldClass, categories_json, world_classes
from .scene import Scene, caption, render_scene

VARIANTS = ("", "_base")


def _variant_classes(variant: str) -> list[WorldClass]:
    classes = world_classes()
    return [c for c in classes if c.seen] if variant == "_base" else classes


def write_split(root: Path, split: str, num_images: int, seed: int, size: int = 128) -> None:
    """Render ``num_images`` scenes with ``seed`` and write them as ``{split}2017``."""
    classes = world_classes()
    contiguous = {v: {c.id: i for i, c in enumerate(_variant_classes(v))} for v in VARIANTS}
    rng = np.random.default_rng(seed)
    d = f"{split}2017"
    img_dir = root / d
    sem_dirs = {v: root / "stuffthingmaps_panoptic_detectron2" / (d + v) for v in VARIANTS}
    pan_dirs = {v: root / "panoptic_detectron2" / (d + v) for v in VARIANTS}
    for p in (img_dir, root / "annotations", *sem_dirs.values(), *pan_dirs.values()):
        p.mkdir(parents=True, exist_ok=True)
    images, ins_anns, captions = [], [], []
    pan_anns: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for i in tqdm(range(num_images), desc=f"world {split}", leave=False):
        scene: Scene = render_scene(classes, rng, size=size)
        image_id = seed * 100_000 + i
        stem = f"{image_id:012d}"
        Image.fromarray(scene.image).save(img_dir / f"{stem}.jpg", quality=95)
        h, w = scene.image.shape[:2]
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w})
        captions.append({"id": len(captions) + 1, "image_id": image_id,
                         "caption": caption(scene, rng)})
        for v in VARIANTS:
            labels = np.full((h, w), 255, np.uint8)
            ids = np.zeros((h, w), np.int32)
            segments = []
            for seg in scene.segments:
                if seg.category.id not in contiguous[v]:
                    continue  # novel class in the base split: void, as in FreeSeg's COCO base data
                labels[seg.mask] = contiguous[v][seg.category.id]
                ids[seg.mask] = seg.id
                area, bbox = segment_stats(seg.mask)
                segments.append({"id": seg.id, "category_id": seg.category.id, "iscrowd": 0,
                                 "area": area, "bbox": bbox})
            Image.fromarray(labels).save(sem_dirs[v] / f"{stem}.png")
            Image.fromarray(id2rgb(ids)).save(pan_dirs[v] / f"{stem}.png")
            pan_anns[v].append({"image_id": image_id, "file_name": f"{stem}.png",
                                "segments_info": segments})
        for seg in scene.segments:
            if seg.category.isthing:
                rle = mask_util.encode(np.asfortranarray(seg.mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                area, bbox = segment_stats(seg.mask)
                ins_anns.append({"id": len(ins_anns) + 1, "image_id": image_id,
                                 "category_id": seg.category.id, "segmentation": rle,
                                 "area": area, "bbox": bbox, "iscrowd": 0})
    for v in VARIANTS:
        _dump(root / "panoptic_detectron2" / f"panoptic_{d}{v}.json",
              {"images": images, "annotations": pan_anns[v],
               "categories": categories_json(_variant_classes(v))})
        collect_label_counts(str(sem_dirs[v]), nproc=1)  # the stage-1 loaders read it
    cats = categories_json(classes)
    _dump(root / "annotations" / f"instances_{d}.json",
          {"images": images, "annotations": ins_anns, "categories": [c for c in cats if c["isthing"]]})
    _dump(root / "annotations" / f"captions_{d}.json", {"images": images, "annotations": captions})


def _dump(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written JSON behind
