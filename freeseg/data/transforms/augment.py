"""The augmentations FreeSeg's mappers use, written to reproduce detectron2's random draws.

Randomness comes from NumPy's global generator (seeded per rank and worker by the loaders), the
same source detectron2 uses, so a fixed seed gives a fixed augmentation sequence.
"""
from __future__ import annotations

import math
import sys
from typing import Sequence

import numpy as np

from ...utils.errors import FreeSegError
from .base import (
    AugInput,
    Augmentation,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    ResizeTransform,
    Transform,
    VFlipTransform,
)


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ``ResizeShortestEdge.get_output_shape``: (new_h, new_w) for edge ``short``,
    each at least 1 (detectron2 rounds the short side of a 4 x 3000 image to 0 under ``max_size``)."""
    scale = short * 1.0 / min(h, w)
    if h < w:
        newh, neww = short, scale * w
    else:
        newh, neww = scale * h, short
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return max(int(newh + 0.5), 1), max(int(neww + 0.5), 1)


class ResizeShortestEdge(Augmentation):
    """Resize so the short side is drawn from ``short_edge_length`` ("choice": one of the list;
    "range": uniform integer in [min, max]), long side capped at ``max_size``."""

    def __init__(self, short_edge_length: int | Sequence[int], max_size: int = sys.maxsize,
                 sample_style: str = "range") -> None:
        if sample_style not in ("range", "choice"):
            raise FreeSegError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING '{sample_style}' unknown; use 'choice' or 'range'")
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        short_edge_length = tuple(int(s) for s in short_edge_length)
        if sample_style == "range" and len(short_edge_length) != 2:
            raise FreeSegError(
                f"MIN_SIZE_TRAIN {short_edge_length} needs two values for sampling 'range'; use 'choice'"
            )
        self.short_edge_length = short_edge_length
        self.max_size = max_size
        self.is_range = sample_style == "range"

    def get_transform(self, aug_input: AugInput) -> Transform:
        h, w = aug_input.image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return NoOpTransform()
        newh, neww = shortest_edge_size(h, w, int(size), self.max_size)
        return ResizeTransform(h, w, newh, neww)


class RandomCrop(Augmentation):
    """detectron2's RandomCrop: types "relative", "relative_range", "absolute", "absolute_range"."""

    def __init__(self, crop_type: str, crop_size: Sequence[float]) -> None:
        if crop_type not in ("relative", "relative_range", "absolute", "absolute_range"):
            raise FreeSegError(f"INPUT.CROP.TYPE '{crop_type}' unknown; use 'absolute' or 'relative'")
        self.crop_type = crop_type
        self.crop_size = tuple(crop_size)

    def get_crop_size(self, h: int, w: int) -> tuple[int, int]:
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            crop = np.asarray(self.crop_size, dtype=np.float32)
            ch, cw = crop + np.random.rand(2) * (1 - crop)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(int(self.crop_size[0]), h), min(int(self.crop_size[1]), w)
        ch = np.random.randint(min(h, self.crop_size[0]), min(h, self.crop_size[1]) + 1)
        cw = np.random.randint(min(w, self.crop_size[0]), min(w, self.crop_size[1]) + 1)
        return int(ch), int(cw)

    def get_transform(self, aug_input: AugInput) -> Transform:
        h, w = aug_input.image.shape[:2]
        ch, cw = self.get_crop_size(h, w)
        y0 = np.random.randint(h - ch + 1)
        x0 = np.random.randint(w - cw + 1)
        return CropTransform(int(x0), int(y0), cw, ch)


class RandomCropCategoryAreaConstraint(Augmentation):
    """Random crop where no single category covers more than ``single_category_max_area`` of the
    (non-ignored) crop; up to 10 tries, then the last try is kept (detectron2's rule)."""

    def __init__(self, crop_type: str, crop_size: Sequence[float],
                 single_category_max_area: float = 1.0, ignored_category: int | None = 255) -> None:
        self.crop = RandomCrop(crop_type, crop_size)
        self.single_category_max_area = single_category_max_area
        self.ignored_category = ignored_category

    def get_transform(self, aug_input: AugInput) -> Transform:
        if self.single_category_max_area >= 1.0:
            return self.crop.get_transform(aug_input)
        sem = aug_input.sem_seg
        if sem is None:
            raise FreeSegError("category-area crop needs a semantic label map; set INPUT.CROP.SINGLE_CATEGORY_MAX_AREA 1.0")
        h, w = sem.shape
        for _ in range(10):
            ch, cw = self.crop.get_crop_size(h, w)
            y0 = np.random.randint(h - ch + 1)
            x0 = np.random.randint(w - cw + 1)
            labels, cnt = np.unique(sem[y0 : y0 + ch, x0 : x0 + cw], return_counts=True)
            if self.ignored_category is not None:
                cnt = cnt[labels != self.ignored_category]
            if len(cnt) > 1 and np.max(cnt) < np.sum(cnt) * self.single_category_max_area:
                break
        return CropTransform(int(x0), int(y0), cw, ch)


class RandomFlip(Augmentation):
    def __init__(self, prob: float = 0.5, horizontal: bool = True, vertical: bool = False) -> None:
        if horizontal == vertical:
            raise FreeSegError("INPUT.RANDOM_FLIP must be 'horizontal' or 'vertical' (or 'none' to disable)")
        self.prob = prob
        self.horizontal = horizontal

    def get_transform(self, aug_input: AugInput) -> Transform:
        if np.random.uniform() < self.prob:
            return HFlipTransform() if self.horizontal else VFlipTransform()
        return NoOpTransform()


class ResizeScale(Augmentation):
    """Large-scale jitter: scale the target size by U(min_scale, max_scale), fit the image in it."""

    def __init__(self, min_scale: float, max_scale: float, target_height: int, target_width: int) -> None:
        self.min_scale, self.max_scale = min_scale, max_scale
        self.target_height, self.target_width = target_height, target_width

    def get_transform(self, aug_input: AugInput) -> Transform:
        h, w = aug_input.image.shape[:2]
        scale = np.random.uniform(self.min_scale, self.max_scale)
        target = np.multiply((self.target_height, self.target_width), scale)
        out_scale = min(target[0] / h, target[1] / w)
        nh, nw = np.round(np.multiply((h, w), out_scale)).astype(int)
        return ResizeTransform(h, w, max(int(nh), 1), max(int(nw), 1))


class FixedSizeCrop(Augmentation):
    """Crop a random ``crop_size`` window (offset uniform in the slack), pad up to it if smaller
    (image 128, semantic 255, panoptic ids 0)."""

    def __init__(self, crop_size: tuple[int, int], pad_value: int = 128) -> None:
        self.crop_size = tuple(int(c) for c in crop_size)
        self.pad_value = pad_value

    def get_transform(self, aug_input: AugInput) -> Transform:
        h, w = aug_input.image.shape[:2]
        ch, cw = self.crop_size
        max_off = np.maximum(np.subtract((h, w), (ch, cw)), 0)
        off = np.round(np.multiply(max_off, np.random.uniform(0.0, 1.0))).astype(int)
        crop = CropTransform(int(off[1]), int(off[0]), min(cw, w), min(ch, h))
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        if pad_h == 0 and pad_w == 0:
            return crop
        return _Chain([crop, PadTransform(0, 0, pad_w, pad_h, self.pad_value)])


class _Chain(Transform):
    def __init__(self, tfms: list[Transform]) -> None:
        self.tfms = tfms

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        for t in self.tfms:
            image = t.apply_image(image)
        return image

    def apply_segmentation(self, seg: np.ndarray, pad_value: int = 255) -> np.ndarray:
        for t in self.tfms:
            seg = t.apply_segmentation(seg, pad_value)
        return seg


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) exclusive bounds of a bool mask, or None when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(ys) == 0:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


class CropImageWithMask(Augmentation):
    """Crop to the bounding box of ``aug_input.mask`` grown by ``expand_ratio`` about its centre.

    The original clipped the right/bottom edge to W-1/H-1 and so lost the last column/row of masks
    touching the border; we clip to W/H (documented fix)."""

    def __init__(self, expand_ratio: float = 1.0) -> None:
        self.expand_ratio = float(expand_ratio)

    def get_transform(self, aug_input: AugInput) -> Transform:
        h, w = aug_input.image.shape[:2]
        box = mask_box(aug_input.mask) if aug_input.mask is not None else None
        if box is None:
            return NoOpTransform()
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        bw, bh = (x1 - x0) * self.expand_ratio, (y1 - y0) * self.expand_ratio
        nx0, ny0 = max(0, int(cx - bw / 2)), max(0, int(cy - bh / 2))
        nx1, ny1 = min(w, int(math.ceil(cx + bw / 2))), min(h, int(math.ceil(cy + bh / 2)))
        return CropTransform(nx0, ny0, max(nx1 - nx0, 1), max(ny1 - ny0, 1))


class RandomResizedCrop(Augmentation):
    """torchvision-style random resized crop (scale, log-uniform ratio, 10 tries, centre fallback),
    resized to ``size`` = (h, w). FreeSeg's config asked (224, 244) and produced 244x224 crops;
    our stage-1 builder passes 224x224 (documented fix)."""

    def __init__(self, size: tuple[int, int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.scale, self.ratio = scale, ratio

    def get_transform(self, aug_input: AugInput) -> Transform:
        height, width = aug_input.image.shape[:2]
        area = height * width
        log_ratio = np.log(np.array(self.ratio))
        for _ in range(10):
            target_area = area * np.random.uniform(self.scale[0], self.scale[1])
            aspect = np.exp(np.random.uniform(log_ratio[0], log_ratio[1]))
            cw = int(round(math.sqrt(target_area * aspect)))
            ch = int(round(math.sqrt(target_area / aspect)))
            if 0 < cw <= width and 0 < ch <= height:
                x0 = np.random.randint(0, width - cw + 1)
                y0 = np.random.randint(0, height - ch + 1)
                break
        else:
            in_ratio = width / height
            if in_ratio < min(self.ratio):
                cw, ch = width, int(round(width / min(self.ratio)))
            elif in_ratio > max(self.ratio):
                ch, cw = height, int(round(height * max(self.ratio)))
            else:
                cw, ch = width, height
            x0, y0 = (width - cw) // 2, (height - ch) // 2
        return _Chain([CropTransform(int(x0), int(y0), cw, ch), ResizeTransform(ch, cw, *self.size)])


class CenterCrop(Augmentation):
    """Centre crop of ``size`` (h, w); pads symmetrically first when the image is smaller
    (image 0, labels with their pad value), as FreeSeg's stage-1 test crop."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def get_transform(self, aug_input: AugInput) -> Transform:
        h, w = aug_input.image.shape[:2]
        ch, cw = self.size
        tfms: list[Transform] = []
        if ch > h or cw > w:
            l, t = max(cw - w, 0) // 2, max(ch - h, 0) // 2
            r, b = (max(cw - w, 0) + 1) // 2, (max(ch - h, 0) + 1) // 2
            tfms.append(PadTransform(l, t, r, b, image_value=0))
            h, w = h + t + b, w + l + r
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        tfms.append(CropTransform(left, top, cw, ch))
        return _Chain(tfms)
