"""Stage-2 training mappers: full-task (semantic + instance + panoptic targets from one sample,
FreeSeg's ``coco_full_lsj`` / ``ade20k_full_lsj``) and semantic-only (``mask_former_semantic``)."""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch

from ...utils.errors import FreeSegError
from ..transforms import AugInput, Augmentation, apply_augmentations
from .common import (
    check_image_size,
    check_labels,
    image_tensor,
    pad_to_divisible,
    panoptic_targets,
    read_image,
    read_label_map,
    read_panoptic_ids,
    semantic_targets,
)


class SemanticMapper:
    """Semantic sample → ``image`` uint8 [3, H, W], ``sem_seg`` int64 [H, W] and
    ``sem_instances`` {gt_classes [N], gt_masks bool [N, H, W]} (one mask per class present).

    Augmentations run on image + label map; then both are padded bottom/right to a multiple of
    ``size_divisibility`` (image 128, labels ``ignore_label``) as Mask2Former's mappers do."""

    def __init__(self, *, augmentations: Sequence[Augmentation], num_classes: int,
                 ignore_label: int = 255, size_divisibility: int = -1) -> None:
        self.augmentations = list(augmentations)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility

    def _load(self, d: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(d["file_name"])
        check_image_size(d, image)
        sem = read_label_map(d["sem_seg_file_name"], d.get("sem_seg_lut"))
        check_labels(sem, self.num_classes, self.ignore_label, d["sem_seg_file_name"])
        if sem.shape != image.shape[:2]:
            raise FreeSegError(
                f"label map {d['sem_seg_file_name']} is {sem.shape} but image {d['file_name']} is {image.shape[:2]}"
            )
        return image, sem

    def _output(self, d: dict[str, Any], image: np.ndarray) -> dict[str, Any]:
        out = {k: v for k, v in copy.copy(d).items() if k not in ("sem_seg_file_name", "pan_seg_file_name", "segments_info")}
        out.setdefault("height", d.get("height", image.shape[0]))
        out.setdefault("width", d.get("width", image.shape[1]))
        return out

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        image, sem = self._load(d)
        out = self._output(d, image)
        aug = apply_augmentations(self.augmentations, AugInput(image, sem_seg=sem))
        image, (sem,) = pad_to_divisible(aug.image, [(aug.sem_seg, self.ignore_label)], self.size_divisibility)
        out["image"] = image_tensor(image)
        out["sem_seg"] = torch_long(sem)
        out["sem_instances"] = semantic_targets(sem, self.ignore_label)
        return out


class FullTaskMapper(SemanticMapper):
    """Full-task sample (semantic map + COCO panoptic PNG + ``segments_info`` in contiguous ids) →
    everything :class:`SemanticMapper` returns plus ``ins_instances`` (non-crowd things) and
    ``pan_instances`` (all non-crowd segments), all at the padded image size."""

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        image, sem = self._load(d)
        pan = read_panoptic_ids(d["pan_seg_file_name"])
        out = self._output(d, image)
        aug = apply_augmentations(self.augmentations, AugInput(image, sem_seg=sem))
        pan = aug.apply_segmentation(pan, 0)
        image, (sem, pan) = pad_to_divisible(
            aug.image, [(aug.sem_seg, self.ignore_label), (pan, 0)], self.size_divisibility
        )
        segments = d.get("segments_info", [])
        out["image"] = image_tensor(image)
        out["sem_seg"] = torch_long(sem)
        out["sem_instances"] = semantic_targets(sem, self.ignore_label)
        out["ins_instances"] = panoptic_targets(pan, segments, things_only=True)
        out["pan_instances"] = panoptic_targets(pan, segments, things_only=False)
        return out


def torch_long(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).long()
