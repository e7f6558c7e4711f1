"""Built-in catalog: FreeSeg's names, class lists, splits and metadata; missing folders."""
from __future__ import annotations

import pytest

from freeseg.data import DatasetCatalog, MetadataCatalog
from freeseg.utils.errors import FreeSegError

NAMES = [
    *(f"coco_2017_{s}_stuff{v}_sem_seg{c}" for s in ("train", "test") for v in ("", "_base", "_novel") for c in ("", "_classification")),
    *(f"coco_2017_{s}_full_task{v}" for s in ("train", "test") for v in ("", "_base", "_novel", "_base_classification")),
    "coco_2017_train_panoptic_with_sem_seg", "coco_2017_val_panoptic_with_sem_seg",
    *(f"voc{v}_sem_seg_{s}{c}" for v in ("", "_base", "_novel") for s in ("train", "test") for c in ("", "_classification")),
    *(f"ade20k_all_{s}{v}" for s in ("train", "val") for v in ("", "_classification", "_base", "_base_classification", "_novel")),
    "ade20k_sem_seg_val", "ade20k_full_sem_seg_val", "pascal_context_59_sem_seg_val", "pascal_context_459_sem_seg_val",
]

COCO_UNSEEN = ["cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard", "clouds",
               "grass", "playingfield", "river", "road", "tree", "wall-concrete"]


@pytest.mark.parametrize("name", NAMES)
def test_registered(name: str) -> None:
    assert name in DatasetCatalog.list()
    meta = MetadataCatalog.get(name)
    assert meta.ignore_label in (255, 65535) and meta.evaluator_type


def test_coco_stuff_split() -> None:
    m = MetadataCatalog.get("coco_2017_test_stuff_sem_seg")
    assert len(m.stuff_classes) == 171 and len(m.thing_classes) == 80
    assert [m.stuff_classes[i] for i, f in enumerate(m.trainable_flag) if not f] == COCO_UNSEEN
    ev = m.evaluation_set
    assert len(ev["base"]) == 156 and len(ev["novel_thing"]) == 7 and len(ev["novel_stuff"]) == 8
    base = MetadataCatalog.get("coco_2017_train_full_task_base")
    assert len(base.stuff_classes) == 156 and not set(base.stuff_classes) & set(COCO_UNSEEN)
    assert base.stuff_dataset_id_to_contiguous_id[157] == base.stuff_classes.index("sky-other")
    assert MetadataCatalog.get("coco_2017_test_stuff_novel_sem_seg").stuff_classes == COCO_UNSEEN


def test_coco_panoptic_unseen_derived_from_coco_stuff() -> None:
    m = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert len(m.stuff_classes) == 133 and len(m.thing_classes) == 80 and m.label_divisor == 1000
    unseen = [m.stuff_classes[i] for i, f in enumerate(m.trainable_flag) if not f]
    assert unseen == COCO_UNSEEN[:8] + ["playingfield", "river", "road", "tree-merged", "grass-merged"]


def test_voc_and_ade_splits() -> None:
    voc = MetadataCatalog.get("voc_sem_seg_test")
    assert len(voc.stuff_classes) == 20 and voc.trainable_flag == [1] * 15 + [0] * 5
    assert MetadataCatalog.get("voc_novel_sem_seg_train").stuff_classes == ["pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    ade = MetadataCatalog.get("ade20k_all_val")
    unseen = [i for i, f in enumerate(ade.trainable_flag) if not f]
    assert unseen == [9, 15, 30, 37, 49, 60, 74, 81, 89, 99, 112, 128, 136, 143, 149]
    assert len(MetadataCatalog.get("ade20k_all_train_base").stuff_classes) == 135
    assert len(MetadataCatalog.get("pascal_context_459_sem_seg_val").stuff_classes) == 459
    assert len(MetadataCatalog.get("pascal_context_59_sem_seg_val").stuff_classes) == 59
    a847 = MetadataCatalog.get("ade20k_full_sem_seg_val")
    assert len(a847.stuff_classes) == 847 and a847.ignore_label == 65535
    assert a847.stuff_classes[846] == "adding machine, totalizer, totaliser"
    assert not MetadataCatalog.get("ade20k_sem_seg_val").get("trainable_flag")  # cross-data-set: all unseen


def test_missing_folder_names_layout_and_script(builtin_root) -> None:
    with pytest.raises(FreeSegError, match=r"coco/train2017 not found \(expected layout: .*prepare_coco_alldata"):
        DatasetCatalog.get("coco_2017_train_full_task_base")
    with pytest.raises(FreeSegError, match="prepare_ade20k"):
        DatasetCatalog.get("ade20k_all_val")


def test_unregistered_name_is_named_with_the_closest_one() -> None:
    pattern = r"data set 'world_val_ful_task' is not registered; did you mean 'world_val_full_task'\?"
    try:
        with pytest.raises(FreeSegError, match=pattern):
            MetadataCatalog.get("world_val_ful_task").get("stuff_classes")  # what the engine reads
        with pytest.raises(FreeSegError, match=pattern):
            _ = MetadataCatalog.get("world_val_ful_task").stuff_classes
        with pytest.raises(FreeSegError, match=pattern):
            DatasetCatalog.get("world_val_ful_task")
    finally:
        MetadataCatalog.remove("world_val_ful_task")
    # metadata set without a data set (as tests and evaluators do) still reads back
    meta = MetadataCatalog.get("_metadata_only_set").set(stuff_classes=["a"])
    try:
        assert meta.get("stuff_classes") == ["a"] and meta.get("thing_classes") is None
    finally:
        MetadataCatalog.remove("_metadata_only_set")
