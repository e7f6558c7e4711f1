"""Register the quickstart world's data sets, named like FreeSeg's COCO full-task ones.

| name | contents |
|---|---|
| `world_train_full_task_base` | stage 2 training: base classes only (novel pixels void) |
| `world_train_full_task_base_classification` | stage 1 training: one region sample per (task, segment) |
| `world_val_full_task` | evaluation on all 17 classes, with `trainable_flag` / `evaluation_set` |
| `world_val_full_task_classification` | stage 1 evaluation on all classes |
"""
from __future__ import annotations

import os

from ..builtin.classes import categories_meta, zero_shot_fields
from ..catalog import DatasetCatalog, MetadataCatalog
from ..loading import flatten_full_task, load_classification, load_panoptic, require_paths
from .classes import categories_json, world_classes

WORLD_DIRNAME = "freeseg_world"
LAYOUT = "freeseg_world/{train,val}2017/*.jpg + panoptic_detectron2/ + stuffthingmaps_panoptic_detectron2/"
SCRIPT = "freeseg quickstart --only data"


def world_root(datasets_root: str) -> str:
    return os.path.join(datasets_root, WORLD_DIRNAME)


def _loader(name: str, root: str, split: str, variant: str, meta: dict, classification: bool):
    img = os.path.join(root, f"{split}2017")
    sem = os.path.join(root, "stuffthingmaps_panoptic_detectron2", f"{split}2017{variant}")
    pan = os.path.join(root, "panoptic_detectron2", f"{split}2017{variant}")
    pan_json = os.path.join(root, "panoptic_detectron2", f"panoptic_{split}2017{variant}.json")

    def load() -> list[dict]:
        require_paths([img, sem, pan, pan_json], name, LAYOUT, SCRIPT)
        dicts = load_panoptic(pan_json, img, pan, sem, meta)
        return flatten_full_task(load_classification(sem, img), dicts) if classification else dicts

    paths = dict(image_root=img, sem_seg_root=sem, panoptic_root=pan, panoptic_json=pan_json,
                 json_file=os.path.join(root, "annotations", f"instances_{split}2017.json"))
    return load, paths


def register_world(datasets_root: str) -> None:
    """Register the four world data sets (idempotent: re-registering is skipped)."""
    root = world_root(datasets_root)
    classes = world_classes()
    cats = categories_json(classes)
    base_cats = [c for c, wc in zip(cats, classes) if wc.seen]
    unseen = {wc.id for wc in classes if not wc.seen}
    specs = [
        ("world_train_full_task_base", "train", "_base", base_cats, {}, False),
        ("world_train_full_task_base_classification", "train", "_base", base_cats, {}, True),
        ("world_val_full_task", "val", "", cats, zero_shot_fields(cats, unseen, False), False),
        ("world_val_full_task_classification", "val", "", cats,
         zero_shot_fields(cats, unseen, False), True),
    ]
    for name, split, variant, variant_cats, zero_shot, classification in specs:
        if name in DatasetCatalog:
            continue
        meta = categories_meta(variant_cats)
        load, paths = _loader(name, root, split, variant, meta, classification)
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            evaluator_type="classification" if classification else "coco_panoptic_seg",
            ignore_label=255, label_divisor=1000, **meta, **zero_shot, **paths,
        )
