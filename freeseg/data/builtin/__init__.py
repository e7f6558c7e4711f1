"""Built-in data sets under FreeSeg's names, registered on ``import freeseg.data``.

Root: ``$DETECTRON2_DATASETS`` (default ``datasets/``). Registration never touches the disk;
loading a data set whose folder is missing raises a FreeSegError naming the expected layout and
the preparation script to run (see ``freeseg prepare --list``).
"""
from __future__ import annotations

import os

from .coco import register_coco_full_task, register_coco_panoptic, register_coco_stuff
from ..world.register import register_world
from .voc_ade import register_ade20k_all, register_cross_dataset, register_voc


def dataset_root() -> str:
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


_BUILTIN_NAMES: set[str] = set()


def register_all(root: str, replace: bool = False) -> None:
    """Register every built-in data set under ``root``. ``replace=True`` first removes the built-in
    registrations (and metadata) made before, e.g. to point them at another root at run time."""
    from ..catalog import DatasetCatalog, MetadataCatalog

    if replace:
        for name in _BUILTIN_NAMES:
            if name in DatasetCatalog:
                DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    before = set(DatasetCatalog)
    register_coco_stuff(root)
    register_coco_full_task(root)
    register_coco_panoptic(root)
    register_voc(root)
    register_ade20k_all(root)
    register_cross_dataset(root)
    register_world(root)  # the quickstart's generated world (freeseg quickstart)
    _BUILTIN_NAMES.update(set(DatasetCatalog) - before)
