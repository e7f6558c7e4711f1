"""COCO-Stuff 171 (156 seen / 15 unseen), FreeSeg's full-task COCO and COCO panoptic 133."""
from __future__ import annotations

import os

from ..catalog import DatasetCatalog, MetadataCatalog
from ..loading import flatten_full_task, load_classification, load_panoptic, load_sem_seg, require_paths
from .classes import categories_meta, coco_panoptic_unseen_ids, load_classes, split_meta, zero_shot_fields

STUFF_LAYOUT = "coco/{train2017,val2017}/*.jpg + coco/stuffthingmaps_detectron2/{train2017,val2017}{,_base,_novel}/*.png"
STUFF_SCRIPT = "freeseg prepare prepare_coco_stuff_164k_sem_seg <root>/coco"
FULL_LAYOUT = (
    "coco/{train2017,val2017}/*.jpg + coco/stuffthingmaps_panoptic_detectron2/<split>{,_base,_novel}/*.png"
    " + coco/panoptic_detectron2/<split>{,_base,_novel}/*.png + coco/panoptic_detectron2/panoptic_<split>{,_base,_novel}.json"
)
FULL_SCRIPT = "freeseg prepare prepare_coco_alldata <root>/coco"
PAN_LAYOUT = (
    "coco/{train2017,val2017}/*.jpg + coco/panoptic_{train2017,val2017}/*.png + coco/annotations/panoptic_{train2017,val2017}.json"
    " + coco/panoptic_semseg_{train2017,val2017}/*.png"
)
PAN_SCRIPT = "freeseg prepare prepare_coco_alldata <root>/coco --panoptic-semseg"


def _sem(name: str, gt: str, img: str, classification: bool, layout: str, script: str):
    def load() -> list[dict]:
        require_paths([img, gt], name, layout, script)
        return load_classification(gt, img) if classification else load_sem_seg(gt, img)
    return load


def register_coco_stuff(root: str) -> None:
    root = os.path.join(root, "coco")
    full, base, novel, cats, _, _ = split_meta("coco_stuff_171")
    zs = zero_shot_fields(cats, set(load_classes("coco_stuff_171")["unseen_ids"]))
    for split, img_dir, gt_dir in (("train", "train2017", "train2017"), ("test", "val2017", "val2017")):
        img = os.path.join(root, img_dir)
        for suffix, meta, extra in (("", full, zs), ("_base", base, {}), ("_novel", novel, {})):
            gt = os.path.join(root, "stuffthingmaps_detectron2", gt_dir + suffix)
            name = f"coco_2017_{split}_stuff{suffix}_sem_seg"
            for cls_suffix, etype in (("", "sem_seg"), ("_classification", "classification")):
                DatasetCatalog.register(name + cls_suffix, _sem(name + cls_suffix, gt, img, bool(cls_suffix), STUFF_LAYOUT, STUFF_SCRIPT))
                MetadataCatalog.get(name + cls_suffix).set(
                    image_root=img, sem_seg_root=gt, evaluator_type=etype, ignore_label=255, **meta, **extra
                )


def _full(name: str, pan_json: str, img: str, pan_root: str, sem_root: str, meta: dict, classification: bool):
    def load() -> list[dict]:
        require_paths([img, sem_root, pan_root, pan_json], name, FULL_LAYOUT, FULL_SCRIPT)
        pan = load_panoptic(pan_json, img, pan_root, sem_root, meta)
        if not classification:
            return pan
        return flatten_full_task(load_classification(sem_root, img), pan)
    return load


def register_coco_full_task(root: str) -> None:
    root = os.path.join(root, "coco")
    full, base, novel, cats, _, _ = split_meta("coco_stuff_171")
    zs = zero_shot_fields(cats, set(load_classes("coco_stuff_171")["unseen_ids"]))
    for split, d in (("train", "train2017"), ("test", "val2017")):
        img = os.path.join(root, d)
        for suffix, meta, extra in (("", full, zs), ("_base", base, {}), ("_novel", novel, {})):
            sem_root = os.path.join(root, "stuffthingmaps_panoptic_detectron2", d + suffix)
            pan_root = os.path.join(root, "panoptic_detectron2", d + suffix)
            pan_json = os.path.join(root, "panoptic_detectron2", f"panoptic_{d}{suffix}.json")
            name = f"coco_2017_{split}_full_task{suffix}"
            common = dict(image_root=img, sem_seg_root=sem_root, panoptic_root=pan_root, panoptic_json=pan_json,
                          json_file=os.path.join(root, "annotations", f"instances_{d}.json"),
                          ignore_label=255, label_divisor=1000, **meta, **extra)
            DatasetCatalog.register(name, _full(name, pan_json, img, pan_root, sem_root, meta, False))
            MetadataCatalog.get(name).set(evaluator_type="coco_panoptic_seg", **common)
            cname = name + "_classification"
            DatasetCatalog.register(cname, _full(cname, pan_json, img, pan_root, sem_root, meta, True))
            MetadataCatalog.get(cname).set(evaluator_type="classification", **common)


def register_coco_panoptic(root: str) -> None:
    root = os.path.join(root, "coco")
    data = load_classes("coco_panoptic_133")
    meta = categories_meta(data["categories"])
    zs = zero_shot_fields(data["categories"], coco_panoptic_unseen_ids())
    for split in ("train2017", "val2017"):
        name = f"coco_2017_{split[:-4]}_panoptic_with_sem_seg"
        img = os.path.join(root, split)
        pan_root = os.path.join(root, f"panoptic_{split}")
        pan_json = os.path.join(root, "annotations", f"panoptic_{split}.json")
        sem_root = os.path.join(root, f"panoptic_semseg_{split}")

        def load(name=name, img=img, pan_root=pan_root, pan_json=pan_json, sem_root=sem_root) -> list[dict]:
            require_paths([img, pan_root, pan_json, sem_root], name, PAN_LAYOUT, PAN_SCRIPT)
            return load_panoptic(pan_json, img, pan_root, sem_root, meta)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            image_root=img, panoptic_root=pan_root, panoptic_json=pan_json, sem_seg_root=sem_root,
            json_file=os.path.join(root, "annotations", f"instances_{split}.json"),
            evaluator_type="coco_panoptic_seg", ignore_label=255, label_divisor=1000, **meta, **zs,
        )
