"""Augmentations (detectron2-compatible numerics, written here because detectron2 is not
installable): resize shortest edge, category-area-constrained crop, SSD colour jitter, flip,
large-scale jitter, and the stage-1 region crops."""
from .augment import (
    CenterCrop,
    CropImageWithMask,
    FixedSizeCrop,
    RandomCrop,
    RandomCropCategoryAreaConstraint,
    RandomFlip,
    RandomResizedCrop,
    ResizeScale,
    ResizeShortestEdge,
    mask_box,
    shortest_edge_size,
)
from .base import AugInput, Augmentation, PadTransform, ResizeTransform, Transform, apply_augmentations
from .color import ColorAugSSD, ColorAugSSDTransform

__all__ = [
    "AugInput", "Augmentation", "CenterCrop", "ColorAugSSD", "ColorAugSSDTransform",
    "CropImageWithMask", "FixedSizeCrop", "PadTransform", "RandomCrop",
    "RandomCropCategoryAreaConstraint", "RandomFlip", "RandomResizedCrop", "ResizeScale",
    "ResizeShortestEdge", "ResizeTransform", "Transform", "apply_augmentations", "mask_box",
    "shortest_edge_size",
]
