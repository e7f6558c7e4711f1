"""Preparation scripts (the code behind ``datasets/prepare_*.py`` and ``freeseg prepare``)."""
from .ade import prepare_ade20k_panoptic
from .coco_alldata import prepare_coco_alldata, semseg_from_panoptic
from .semantic import collect_label_counts, prepare_ade20k_sem, prepare_coco_stuff, prepare_voc

__all__ = [
    "collect_label_counts", "prepare_ade20k_panoptic", "prepare_ade20k_sem", "prepare_coco_alldata",
    "prepare_coco_stuff", "prepare_voc", "semseg_from_panoptic",
]
