"""From one image's per-task predictions to the outputs of docs/architecture.md.

Semantic: FreeSeg's (Σ_q s·sigmoid(mask) at input size, then bilinear to the output size).
Panoptic and instance: Mask2Former's standard inference on the CLIP-ensembled scores, on mask
logits resized to the output size (the original's versions are buggy, FREESEG_SPEC §8.2-3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ...postprocess import entity_inference, instance_inference, panoptic_inference, resize_to_output, semantic_inference
from .vocabulary import INSTANCE, PANOPTIC, SEMANTIC, Vocabulary

if TYPE_CHECKING:  # pragma: no cover
    from .open_vocabulary import TaskPrediction


@dataclass(frozen=True)
class TaskThresholds:
    """``MODEL.MASK_FORMER.TEST``: OBJECT_MASK_THRESHOLD, OVERLAP_THRESHOLD, TEST_TOPK_PER_IMAGE."""

    object_mask: float = 0.8
    overlap: float = 0.8
    topk_per_image: int = 100


def postprocess_image(
    tasks: dict[str, "TaskPrediction"],
    out_size: tuple[int, int],
    vocab: Vocabulary,
    thresholds: TaskThresholds,
    entity_on: bool = False,
) -> dict[str, Any]:
    """``{"sem_seg": [K, H, W]}`` plus ``panoptic_seg`` / ``instances`` / ``entity`` for the
    tasks present (H, W = ``out_size``)."""
    h, w = out_size
    sem = tasks[SEMANTIC]
    result: dict[str, Any] = {
        "sem_seg": resize_to_output(semantic_inference(sem.scores, _kept_masks(sem)), h, w)
    }
    num_classes = sem.scores.shape[1]
    flags = vocab.thing_flags or [1] * num_classes
    is_thing = torch.tensor(flags, dtype=torch.bool, device=sem.scores.device)
    resized: dict[str, torch.Tensor] = {}

    def masks_out(task: str) -> torch.Tensor:
        if task not in resized:
            pred = tasks[task]
            resized[task] = resize_to_output(_kept_masks(pred), h, w)
        return resized[task]

    if PANOPTIC in tasks:
        result["panoptic_seg"] = panoptic_inference(
            tasks[PANOPTIC].scores, masks_out(PANOPTIC), is_thing, thresholds.object_mask, thresholds.overlap
        )
    if INSTANCE in tasks:
        result["instances"] = instance_inference(
            tasks[INSTANCE].scores,
            masks_out(INSTANCE),
            is_thing if PANOPTIC in tasks else None,
            topk=thresholds.topk_per_image,
        )
    if entity_on:
        task = PANOPTIC if PANOPTIC in tasks else SEMANTIC
        scores = tasks[task].scores
        quality = scores.max(dim=1).values if scores.numel() else scores.new_zeros(scores.shape[0])
        result["entity"] = entity_inference(masks_out(task), quality, overlap_threshold=thresholds.overlap)
    return result


def _kept_masks(pred: "TaskPrediction") -> torch.Tensor:
    """The kept queries' full-resolution mask logits (no copy when every query is kept, the
    usual case: the copy would be 245 MB for 100 queries at 640x960)."""
    return pred.mask_logits if bool(pred.keep.all()) else pred.mask_logits[pred.keep]
