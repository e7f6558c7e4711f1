"""Built-in data sets under FreeSeg's names, registered on ``import freeseg.data``.

Root: ``$DETECTRON2_DATASETS`` (default ``datasets/``). Registration never touches the disk;
loading a data set whose folder is missing raises a FreeSegError naming the expected layout and
the preparation script to run (see ``freeseg prepare --list``).
"""
from __future__ import annotations

import os

from .coco import register_coco_full_task, register_coco_panoptic, register_coco_stuff
from .voc_ade import register_ade20k_all, register_cross_dataset, register_voc


def dataset_root() -> str:
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


def register_all(root: str) -> None:
    register_coco_stuff(root)
    register_coco_full_task(root)
    register_coco_panoptic(root)
    register_voc(root)
    register_ade20k_all(root)
    register_cross_dataset(root)
