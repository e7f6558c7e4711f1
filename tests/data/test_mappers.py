"""Mappers: every target of every mapper, on prepared tiny data sets; bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from freeseg.cli.main import run_command
from freeseg.config import get_cfg
from freeseg.data import DatasetCatalog, MetadataCatalog
from freeseg.data.mappers import (
    CorruptImageError,
    EmptyRegion,
    FullTaskMapper,
    RegionMapper,
    SemanticMapper,
    build_mapper,
)
from freeseg.data.mappers.common import read_panoptic_ids
from freeseg.data.transforms import CropImageWithMask, RandomFlip, RandomResizedCrop
from freeseg.utils.errors import ConfigError, FreeSegError

from .fakes import corrupt_file


def _prep(*argv: str) -> None:
    assert run_command("prepare", [*argv, "--nproc", "1", "--subset"]) == 0


def _cfg(mapper: str, train: str, **kw):
    cfg = get_cfg()
    cfg.merge_from_list([
        "INPUT.DATASET_MAPPER_NAME", mapper, "DATASETS.TRAIN", (train,), "DATASETS.TEST", (train,),
        "INPUT.MIN_SIZE_TRAIN", (48, 64), "INPUT.MAX_SIZE_TRAIN", 256, "INPUT.CROP.ENABLED", True,
        "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", (32, 32), "INPUT.COLOR_AUG_SSD", True,
        "INPUT.SIZE_DIVISIBILITY", 32, "INPUT.MIN_SIZE_TEST", 40, "INPUT.MAX_SIZE_TEST", 400,
        "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0, "SEED", 5,
    ])
    for k, v in kw.items():
        cfg.merge_from_list([k, v])
    return cfg


@pytest.fixture
def coco_full(coco_root: Path) -> Path:
    _prep("prepare_coco_alldata", str(coco_root))
    return coco_root


def test_full_task_targets(coco_full: Path) -> None:
    d = DatasetCatalog.get("coco_2017_train_full_task_base")[0]
    mapper = build_mapper(_cfg("coco_full_lsj", "coco_2017_train_full_task_base"), True)
    assert isinstance(mapper, FullTaskMapper)
    np.random.seed(0)
    for _ in range(5):
        out = mapper(d)
        img, sem = out["image"], out["sem_seg"]
        assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and sem.shape == (32, 32)
        sem_t = out["sem_instances"]
        present = sorted(v for v in sem.unique().tolist() if v != 255)
        assert sem_t["gt_classes"].tolist() == present
        for c, m in zip(sem_t["gt_classes"], sem_t["gt_masks"]):
            assert torch.equal(m, sem == c)
        pan, ins = out["pan_instances"], out["ins_instances"]
        assert pan["gt_masks"].shape[1:] == (32, 32) and pan["gt_masks"].dtype == torch.bool
        # crowd excluded, only things in the instance targets, no empty masks
        assert len(pan["gt_classes"]) <= 2 and set(ins["gt_classes"].tolist()) <= {0}
        assert all(m.any() for m in pan["gt_masks"])
        # panoptic and semantic targets describe the same pixels
        for c, m in zip(pan["gt_classes"], pan["gt_masks"]):
            assert (sem[m] == c).all()
    assert out["height"] == 48 and out["width"] == 64 and "pan_seg_file_name" not in out


def test_full_task_without_crop_pads_image_with_128(coco_full: Path) -> None:
    d = DatasetCatalog.get("coco_2017_train_full_task")[0]
    cfg = _cfg("coco_full_lsj", "coco_2017_train_full_task", **{"INPUT.CROP.ENABLED": False,
               "INPUT.COLOR_AUG_SSD": False, "INPUT.MIN_SIZE_TRAIN": (48,), "INPUT.SIZE_DIVISIBILITY": 40})
    out = build_mapper(cfg, True)(d)
    assert out["image"].shape == (3, 80, 80)
    assert (out["image"][:, 48:] == 128).all() and (out["sem_seg"][48:] == 255).all()
    pan = out["pan_instances"]
    ids = read_panoptic_ids(d["pan_seg_file_name"])
    seg = [s for s in d["segments_info"] if not s["iscrowd"]]
    assert len(pan["gt_classes"]) == len(seg)
    flipped = not torch.equal(pan["gt_masks"][0, :48, :64], torch.from_numpy(ids == seg[0]["id"]))
    ref = torch.from_numpy(ids == seg[0]["id"])
    assert torch.equal(pan["gt_masks"][0, :48, :64], ref.flip(-1) if flipped else ref)


def test_lsj_option(coco_full: Path) -> None:
    cfg = _cfg("coco_full_lsj", "coco_2017_train_full_task", **{"INPUT.LSJ_AUG": True, "INPUT.IMAGE_SIZE": 64})
    np.random.seed(1)
    out = build_mapper(cfg, True)(DatasetCatalog.get("coco_2017_train_full_task")[0])
    assert out["image"].shape == (3, 64, 64) and out["sem_seg"].shape == (64, 64)


def test_semantic_mapper_and_label_range(voc_root: Path, tmp_path: Path) -> None:
    _prep("prepare_voc_sem_seg", str(voc_root))
    cfg = _cfg("mask_former_semantic", "voc_base_sem_seg_train")
    mapper = build_mapper(cfg, True)
    assert isinstance(mapper, SemanticMapper)
    d = DatasetCatalog.get("voc_base_sem_seg_train")[0]
    out = mapper(d)
    assert "sem_instances" in out and "pan_instances" not in out
    assert set(out["sem_instances"]["gt_classes"].tolist()) <= {14}
    # the 20-class map read with the 15-class list: out of range -> error naming the file
    bad = dict(DatasetCatalog.get("voc_sem_seg_train")[0])
    with pytest.raises(FreeSegError, match=r"2007_000000\.png holds value 16"):
        mapper(bad)


def test_region_mapper_all_tasks(coco_full: Path) -> None:
    cfg = _cfg("mask_former_full_binary_semantic", "coco_2017_train_full_task_base_classification",
               **{"INPUT.SIZE_DIVISIBILITY": -1})
    mapper = build_mapper(cfg, True)
    assert isinstance(mapper, RegionMapper)
    dicts = DatasetCatalog.get("coco_2017_train_full_task_base_classification")
    np.random.seed(0)
    seen = set()
    for d in dicts:
        try:
            out = mapper(d)
        except EmptyRegion:
            continue
        seen.add(out["task"])
        inst = out["instances"]
        # square crops of MIN_SIZE_TRAIN[0] (48 here; 224 in FreeSeg's stage-1 configs)
        assert out["image"].shape == (3, 48, 48) and inst["gt_masks"].shape == (1, 48, 48)
        assert inst["gt_classes"].tolist() == [d["category_id"]] and inst["gt_masks"].any()
    assert seen == {"sem_seg", "ins_seg", "pan_seg"}
    test_mapper = build_mapper(cfg, False)
    out = test_mapper(dicts[0])
    assert out["image"].shape == (3, 40, 40)  # MIN_SIZE_TEST centre crop, no resize


def test_region_mapper_empty_mask_raises(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.full((10, 12), 1, np.uint8)).save(tmp_path / "a.png")
    mapper = RegionMapper(augmentations=[CropImageWithMask(1.0), RandomResizedCrop((8, 8)), RandomFlip()], num_classes=3)
    d = {"file_name": str(tmp_path / "a.jpg"), "sem_seg_file_name": str(tmp_path / "a.png"), "task": "sem_seg"}
    with pytest.raises(EmptyRegion):
        mapper({**d, "category_id": 2})  # class 2 is absent
    assert mapper({**d, "category_id": 1})["instances"]["gt_masks"].all()


def test_test_mapper_keeps_gt_paths(voc_root: Path) -> None:
    _prep("prepare_voc_sem_seg", str(voc_root))
    cfg = _cfg("mask_former_semantic", "voc_sem_seg_test")
    d = DatasetCatalog.get("voc_sem_seg_test")[0]
    out = build_mapper(cfg, False)(d)
    assert out["image"].shape == (3, 40, 53) and (out["height"], out["width"]) == (48, 64)
    assert out["sem_seg_file_name"] == d["sem_seg_file_name"] and "sem_seg" not in out


def test_corrupt_image_and_unknown_mapper(voc_root: Path) -> None:
    _prep("prepare_voc_sem_seg", str(voc_root))
    d = DatasetCatalog.get("voc_sem_seg_train")[0]
    corrupt_file(d["file_name"])
    with pytest.raises(CorruptImageError, match="2007_000000.jpg"):
        build_mapper(_cfg("mask_former_semantic", "voc_sem_seg_train"), True)(d)
    with pytest.raises(ConfigError, match="did you mean 'mask_former_semantic'"):
        build_mapper(_cfg("mask_former_semantik", "voc_sem_seg_train"), True)


def test_build_loaders_from_config(coco_full: Path) -> None:
    import itertools

    from freeseg.data.loaders import build_test_loader, build_train_loader

    cfg = _cfg("coco_full_lsj", "coco_2017_train_full_task_base", **{"DATASETS.TEST": ("coco_2017_test_full_task",)})
    batch = next(iter(build_train_loader(cfg)))
    assert len(batch) == 2 and all({"sem_instances", "ins_instances", "pan_instances"} <= set(d) for d in batch)
    assert batch[0]["meta"] == {"dataset_name": "coco_2017_train_full_task_base"}
    test = list(build_test_loader(cfg, "coco_2017_test_full_task"))
    assert [len(b) for b in test] == [1, 1] and test[0][0]["image"].shape == (3, 40, 53)

    cfg1 = _cfg("mask_former_full_binary_semantic", "coco_2017_train_full_task_base_classification",
                **{"DATASETS.SAMPLE_PER_CLASS": 1, "INPUT.SIZE_DIVISIBILITY": -1, "SOLVER.IMS_PER_BATCH": 4})
    batches = list(itertools.islice(iter(build_train_loader(cfg1)), 3))
    samples = [d for b in batches for d in b]
    assert all(d["image"].shape == (3, 48, 48) for d in samples)
    assert {d["task"] for d in samples} <= {"sem_seg", "ins_seg", "pan_seg"}
    # one sample per (task, class): sem {person, sky-other}, ins {person}, pan {person, sky-other}
    assert len(build_train_loader(cfg1).dataset) == 5
