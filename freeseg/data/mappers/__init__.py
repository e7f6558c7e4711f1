"""Mappers (data set dict → model input) and ``build_mapper(cfg, ...)``, choosing by
``INPUT.DATASET_MAPPER_NAME`` through the plain dict :data:`MAPPERS` (FreeSeg's names)."""
from __future__ import annotations

from typing import Any, Callable

from ...utils.errors import ConfigError, closest
from ..catalog import MetadataCatalog
from ..transforms import (
    Augmentation,
    CenterCrop,
    ColorAugSSD,
    CropImageWithMask,
    FixedSizeCrop,
    RandomCropCategoryAreaConstraint,
    RandomFlip,
    RandomResizedCrop,
    ResizeScale,
    ResizeShortestEdge,
)
from .common import CorruptImageError
from .full_task import FullTaskMapper, SemanticMapper
from .region import EmptyRegion, RegionMapper
from .test import TestMapper



def _flip(cfg) -> list[Augmentation]:
    mode = cfg.INPUT.RANDOM_FLIP
    return [] if mode == "none" else [RandomFlip(horizontal=mode == "horizontal", vertical=mode == "vertical")]


def freeseg_augmentations(cfg) -> list[Augmentation]:
    """What FreeSeg actually trains with (also under the name ``coco_full_lsj``): resize shortest
    edge (choice from MIN_SIZE_TRAIN) → category-area crop → SSD colour → horizontal flip."""
    augs: list[Augmentation] = [
        ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(RandomCropCategoryAreaConstraint(
            cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
            cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        ))
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(ColorAugSSD())
    augs.append(RandomFlip())
    return augs


def lsj_augmentations(cfg) -> list[Augmentation]:
    """Real large-scale jitter (``INPUT.LSJ_AUG``): flip → ResizeScale(MIN_SCALE..MAX_SCALE of
    IMAGE_SIZE) → FixedSizeCrop(IMAGE_SIZE) padded with 128 / 255."""
    size = cfg.INPUT.IMAGE_SIZE
    return _flip(cfg) + [
        ResizeScale(cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE, size, size),
        FixedSizeCrop((size, size)),
    ]


def _num_classes(dataset_names) -> tuple[int, int]:
    meta = MetadataCatalog.get(dataset_names[0])
    return len(meta.stuff_classes), meta.get("ignore_label", 255)


def _full_task(cfg, is_train: bool):
    k, ignore = _num_classes(cfg.DATASETS.TRAIN)
    augs = lsj_augmentations(cfg) if cfg.INPUT.LSJ_AUG else freeseg_augmentations(cfg)
    return FullTaskMapper(augmentations=augs, num_classes=k, ignore_label=ignore,
                          size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY)


def _semantic(cfg, is_train: bool):
    k, ignore = _num_classes(cfg.DATASETS.TRAIN)
    return SemanticMapper(augmentations=freeseg_augmentations(cfg), num_classes=k, ignore_label=ignore,
                          size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY)


def _region(cfg, is_train: bool):
    names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    k, ignore = _num_classes(names)
    augs: list[Augmentation] = [CropImageWithMask(cfg.MODEL.CLIP_ADAPTER.MASK_EXPAND_RATIO)]
    if is_train:
        # Square crops of MIN_SIZE_TRAIN[0] (224 in FreeSeg's configs, whose (224, 244) was a
        # typo that made 244x224 crops); the CLIP's input size, so a smaller CLIP can be used.
        size = int(cfg.INPUT.MIN_SIZE_TRAIN[0])
        augs += [RandomResizedCrop((size, size)), RandomFlip()]
    else:
        augs.append(CenterCrop((cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)))
    return RegionMapper(augmentations=augs, num_classes=k, ignore_label=ignore,
                        size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY)


MAPPERS: dict[str, Callable[[Any, bool], Callable[[dict], dict]]] = {
    "coco_full_lsj": _full_task,
    "ade20k_full_lsj": _full_task,
    "mask_former_semantic": _semantic,
    "mask_former_binary_semantic": _region,
    "mask_former_full_binary_semantic": _region,
}
REGION_MAPPERS = {"mask_former_binary_semantic", "mask_former_full_binary_semantic"}


def build_mapper(cfg, is_train: bool) -> Callable[[dict], dict]:
    """Training mapper by ``INPUT.DATASET_MAPPER_NAME``; test: region mapper for stage-1 names,
    otherwise :class:`TestMapper` (MIN_SIZE_TEST / MAX_SIZE_TEST)."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MAPPERS:
        hint = closest(name, MAPPERS)
        raise ConfigError(
            f"INPUT.DATASET_MAPPER_NAME '{name}' unknown" + (f"; did you mean '{hint}'?" if hint else "")
            + f" (known: {sorted(MAPPERS)})"
        )
    if not is_train and name not in REGION_MAPPERS:
        return TestMapper(min_size=cfg.INPUT.MIN_SIZE_TEST, max_size=cfg.INPUT.MAX_SIZE_TEST)
    return MAPPERS[name](cfg, is_train)


__all__ = [
    "MAPPERS", "CorruptImageError", "EmptyRegion", "FullTaskMapper", "RegionMapper", "SemanticMapper",
    "TestMapper", "build_mapper", "freeseg_augmentations", "lsj_augmentations",
]
