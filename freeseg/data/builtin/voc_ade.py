"""PASCAL VOC 2012 (15/5), ADE20K-150 all tasks (135/15), and the cross-data-set semantic test
sets ADE20K-150, ADE20K-847, PASCAL Context 59 / 459 (VOC 20 is ``voc_sem_seg_test``)."""
from __future__ import annotations

import os

from ..catalog import DatasetCatalog, MetadataCatalog
from ..loading import flatten_full_task, load_classification, load_panoptic, load_sem_seg, require_paths
from .classes import categories_meta, load_classes, split_meta, zero_shot_fields

VOC_LAYOUT = "VOC2012/JPEGImages/*.jpg + VOC2012/annotations_detectron2/{train,val}{,_base,_novel}/*.png"
VOC_SCRIPT = "freeseg prepare prepare_voc_sem_seg <root>/VOC2012"
ADE_LAYOUT = (
    "ADEChallengeData2016/images/{training,validation}/*.jpg + ADEChallengeData2016/annotations_detectron2/"
    "{training,validation}{,_base,_novel}/*.png + ADEChallengeData2016/ade20k_panoptic_{train,val}{,_base,_novel}{/,.json}"
)
ADE_SCRIPT = "freeseg prepare prepare_ade20k_sem_seg_novel / prepare_ade20k_pan_seg_novel"


def _sem_loader(name: str, gt: str, img: str, classification: bool, layout: str, script: str,
                gt_exts: tuple[str, ...] = (".png",)):
    def load() -> list[dict]:
        require_paths([img, gt], name, layout, script)
        if classification:
            return load_classification(gt, img)
        return load_sem_seg(gt, img, gt_exts=gt_exts)
    return load


def register_voc(root: str) -> None:
    root = os.path.join(root, "VOC2012")
    full, base, novel, cats, _, _ = split_meta("voc_20")
    zs = zero_shot_fields(cats, set(load_classes("voc_20")["unseen_ids"]), with_thing_stuff=False)
    img = os.path.join(root, "JPEGImages")
    for split, d in (("train", "train"), ("test", "val")):
        for prefix, suffix, meta, extra in (("voc", "", full, zs), ("voc_base", "_base", base, {}),
                                            ("voc_novel", "_novel", novel, {})):
            gt = os.path.join(root, "annotations_detectron2", d + suffix)
            name = f"{prefix}_sem_seg_{split}"
            for cls_suffix, etype in (("", "sem_seg"), ("_classification", "classification")):
                DatasetCatalog.register(name + cls_suffix, _sem_loader(name + cls_suffix, gt, img, bool(cls_suffix), VOC_LAYOUT, VOC_SCRIPT))
                MetadataCatalog.get(name + cls_suffix).set(
                    image_root=img, sem_seg_root=gt, evaluator_type=etype, ignore_label=255, **meta, **extra
                )


def register_ade20k_all(root: str) -> None:
    root = os.path.join(root, "ADEChallengeData2016")
    full, base, novel, cats, _, _ = split_meta("ade20k_150")
    zs = zero_shot_fields(cats, set(load_classes("ade20k_150")["unseen_ids"]))
    for split, d in (("train", "training"), ("val", "validation")):
        img = os.path.join(root, "images", d)
        for suffix, meta, extra in (("", full, zs), ("_base", base, {}), ("_novel", novel, {})):
            sem_root = os.path.join(root, "annotations_detectron2", d + suffix)
            pan_root = os.path.join(root, f"ade20k_panoptic_{split}{suffix}")
            pan_json = os.path.join(root, f"ade20k_panoptic_{split}{suffix}.json")
            name = f"ade20k_all_{split}{suffix}"
            common = dict(image_root=img, sem_seg_root=sem_root, panoptic_root=pan_root, panoptic_json=pan_json,
                          json_file=os.path.join(root, f"ade20k_instance_{split}{suffix}.json"),
                          ignore_label=255, label_divisor=1000, **meta, **extra)

            def load(name=name, img=img, sem_root=sem_root, pan_root=pan_root, pan_json=pan_json, meta=meta,
                     classification=False) -> list[dict]:
                require_paths([img, sem_root, pan_root, pan_json], name, ADE_LAYOUT, ADE_SCRIPT)
                pan = load_panoptic(pan_json, img, pan_root, sem_root, meta)
                return flatten_full_task(load_classification(sem_root, img), pan) if classification else pan

            DatasetCatalog.register(name, load)
            MetadataCatalog.get(name).set(evaluator_type="ade20k_panoptic_seg", **common)
            cname = name + "_classification"
            DatasetCatalog.register(cname, lambda load=load, cname=cname: load(name=cname, classification=True))
            MetadataCatalog.get(cname).set(evaluator_type="classification", **common)


def register_cross_dataset(root: str) -> None:
    """Semantic test sets for cross-data-set evaluation (all classes count as unseen: no
    ``trainable_flag``). Paths follow the layouts of MaskFormer / zsseg."""
    specs = [
        ("ade20k_sem_seg_val", "ade20k_150", "ADEChallengeData2016/images/validation",
         "ADEChallengeData2016/annotations_detectron2/validation", 255, (".png",),
         "freeseg prepare prepare_ade20k_sem_seg_novel <root>/ADEChallengeData2016"),
        ("ade20k_full_sem_seg_val", "ade20k_847", "ADE20K_2021_17_01/images_detectron2/validation",
         "ADE20K_2021_17_01/annotations_detectron2/validation", 65535, (".tif", ".png"),
         "MaskFormer's datasets/prepare_ade20k_full_sem_seg.py"),
        ("pascal_context_59_sem_seg_val", "pascal_context_59", "pascal_context/val/image",
         "pascal_context/val/label", 255, (".png",), "zsseg's datasets/prepare_pcontext_sem_seg_59cls.py"),
        ("pascal_context_459_sem_seg_val", "pascal_context_459", "pascal_context/val/image",
         "pascal_context/val/label_full", 65535, (".tif", ".png"), "zsseg's datasets/prepare_pcontext_sem_seg_459cls.py"),
    ]
    for name, classes, img_dir, gt_dir, ignore, exts, script in specs:
        img, gt = os.path.join(root, img_dir), os.path.join(root, gt_dir)
        layout = f"{img_dir}/*.jpg + {gt_dir}/*{exts[0]}"
        DatasetCatalog.register(name, _sem_loader(name, gt, img, False, layout, script, exts))
        MetadataCatalog.get(name).set(
            image_root=img, sem_seg_root=gt, evaluator_type="sem_seg", ignore_label=ignore,
            **categories_meta(load_classes(classes)["categories"]),
        )
