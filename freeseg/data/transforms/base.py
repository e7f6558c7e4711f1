"""Deterministic geometric/photometric transforms and the augmentation driver.

detectron2's `detectron2.data.transforms` is not installable here, so the few transforms FreeSeg
uses are written again with the same numerics: images are uint8 HWC numpy arrays resized with
PIL bilinear; label maps (int64 HW) are resized with torch ``nearest`` exactly as detectron2 does
for the non-uint8 label maps of Mask2Former's mappers.

An :class:`Augmentation` draws its random parameters (from NumPy's global generator, which the
loaders seed per rank and worker, like detectron2) and returns a :class:`Transform` that then
applies identically to the image and to every label map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class Transform:
    """A deterministic transform of an image (uint8 [H, W, 3]) and label maps (int64 [H, W])."""

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply_segmentation(self, seg: np.ndarray, pad_value: int = 255) -> np.ndarray:
        """``pad_value`` fills pixels a transform creates (255 for semantic, 0 for panoptic ids)."""
        raise NotImplementedError


@dataclass
class ResizeTransform(Transform):
    h: int
    w: int
    new_h: int
    new_w: int

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        assert image.shape[:2] == (self.h, self.w), f"{image.shape} vs {(self.h, self.w)}"
        if (self.new_h, self.new_w) == (self.h, self.w):
            return image
        pil = Image.fromarray(image)
        return np.asarray(pil.resize((self.new_w, self.new_h), Image.BILINEAR))

    def apply_segmentation(self, seg: np.ndarray, pad_value: int = 255) -> np.ndarray:
        if (self.new_h, self.new_w) == (self.h, self.w):
            return seg
        # detectron2 resizes float label maps with F.interpolate(mode="nearest"): src = floor(dst * in / out).
        # float32 holds every label and panoptic id (< 2**24) exactly and halves the work of float64.
        t = torch.from_numpy(np.ascontiguousarray(seg).astype(np.float32))[None, None]
        out = F.interpolate(t, (self.new_h, self.new_w), mode="nearest")
        return out[0, 0].numpy().astype(seg.dtype)


@dataclass
class CropTransform(Transform):
    x0: int
    y0: int
    w: int
    h: int

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return image[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w]

    def apply_segmentation(self, seg: np.ndarray, pad_value: int = 255) -> np.ndarray:
        return seg[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w]


@dataclass
class PadTransform(Transform):
    """Pad (left, top, right, bottom); images with ``image_value``, label maps with their pad value."""

    left: int
    top: int
    right: int
    bottom: int
    image_value: int = 128

    def _pad(self, arr: np.ndarray, value: int) -> np.ndarray:
        widths = [(self.top, self.bottom), (self.left, self.right)] + [(0, 0)] * (arr.ndim - 2)
        return np.pad(arr, widths, mode="constant", constant_values=value)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return self._pad(image, self.image_value)

    def apply_segmentation(self, seg: np.ndarray, pad_value: int = 255) -> np.ndarray:
        return self._pad(seg, pad_value)


@dataclass
class HFlipTransform(Transform):
    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[:, ::-1])

    def apply_segmentation(self, seg: np.ndarray, pad_value: int = 255) -> np.ndarray:
        return np.ascontiguousarray(seg[:, ::-1])


@dataclass
class VFlipTransform(Transform):
    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[::-1])

    def apply_segmentation(self, seg: np.ndarray, pad_value: int = 255) -> np.ndarray:
        return np.ascontiguousarray(seg[::-1])


class NoOpTransform(Transform):
    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return image

    def apply_segmentation(self, seg: np.ndarray, pad_value: int = 255) -> np.ndarray:
        return seg


@dataclass
class AugInput:
    """What augmentations look at: the image, the semantic map (for category-aware crops) and,
    for stage-1 crops, the binary mask of the selected region."""

    image: np.ndarray
    sem_seg: np.ndarray | None = None
    mask: np.ndarray | None = None
    transforms: list[Transform] = field(default_factory=list)

    def apply(self, tfm: Transform) -> None:
        self.image = tfm.apply_image(self.image)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg, 255)
        if self.mask is not None:
            self.mask = tfm.apply_segmentation(self.mask.astype(np.int64), 0).astype(bool)
        self.transforms.append(tfm)

    def apply_segmentation(self, seg: np.ndarray, pad_value: int) -> np.ndarray:
        """Replay the transforms applied so far on another label map (e.g. panoptic ids)."""
        for tfm in self.transforms:
            seg = tfm.apply_segmentation(seg, pad_value)
        return seg


class Augmentation:
    """Draws random parameters from the current input and returns a :class:`Transform`."""

    def get_transform(self, aug_input: AugInput) -> Transform:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def apply_augmentations(augs: Sequence[Augmentation], aug_input: AugInput) -> AugInput:
    """Apply ``augs`` in order, each seeing the output of the previous one (detectron2's rule)."""
    for aug in augs:
        aug_input.apply(aug.get_transform(aug_input))
    return aug_input
