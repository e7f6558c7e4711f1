"""Stage-1 region samples (FreeSeg's ``mask_former_binary_semantic`` /
``mask_former_full_binary_semantic``): one mask of one class per sample, cropped around it."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ...utils.errors import FreeSegError
from ..transforms import AugInput, Augmentation, apply_augmentations
from .common import check_labels, image_tensor, pad_to_divisible, read_image, read_label_map, read_panoptic_ids


class EmptyRegion(Exception):
    """The sample's mask is empty after augmentation; the training loader draws another sample."""


class RegionMapper:
    """Sample with ``task`` ("sem_seg": mask = label map == ``category_id``; "ins_seg"/"pan_seg":
    mask = panoptic ids == ``id``) → ``image`` uint8 [3, h, w], ``task``, ``category_id`` and
    ``instances`` {gt_classes int64 [1], gt_masks bool [1, h, w]}.

    Training augmentations (built by :func:`freeseg.data.mappers.build_mapper`): crop to the mask's
    box × MASK_EXPAND_RATIO, random resized crop to MIN_SIZE_TRAIN[0] squared (224 in FreeSeg), flip. Test: box crop, MIN_SIZE_TEST centre crop.
    An empty mask after augmentation raises :class:`EmptyRegion` (the original returned None)."""

    def __init__(self, *, augmentations: Sequence[Augmentation], num_classes: int,
                 ignore_label: int = 255, size_divisibility: int = -1) -> None:
        self.augmentations = list(augmentations)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility

    def _mask(self, d: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
        task = d.get("task", "sem_seg")
        if task == "sem_seg":
            sem = read_label_map(d["sem_seg_file_name"], d.get("sem_seg_lut"))
            check_labels(sem, self.num_classes, self.ignore_label, d["sem_seg_file_name"])
            mask = sem == d["category_id"]
        elif task in ("ins_seg", "pan_seg"):
            mask = read_panoptic_ids(d["pan_seg_file_name"]) == d["id"]
        else:
            raise FreeSegError(f"sample {d['file_name']} has task '{task}'; expected sem_seg, ins_seg or pan_seg")
        if mask.shape != shape:
            raise FreeSegError(f"mask of {d['file_name']} is {mask.shape}, image is {shape}")
        return mask

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        image = read_image(d["file_name"])
        mask = self._mask(d, image.shape[:2])
        aug = apply_augmentations(self.augmentations, AugInput(image, mask=mask))
        image, (mask,) = pad_to_divisible(aug.image, [(aug.mask.astype(np.uint8), 0)], self.size_divisibility)
        if not mask.any():
            raise EmptyRegion(d["file_name"])
        out = {k: v for k, v in d.items() if k not in ("sem_seg_file_name", "pan_seg_file_name")}
        out.setdefault("task", "sem_seg")
        out["image"] = image_tensor(image)
        out["instances"] = {
            "gt_classes": torch.tensor([int(d["category_id"])], dtype=torch.int64),
            "gt_masks": torch.from_numpy(mask.astype(bool))[None],
        }
        return out
