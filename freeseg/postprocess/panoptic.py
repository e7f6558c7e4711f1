"""Panoptic inference: Mask2Former's algorithm on class probabilities without void.

FreeSeg's own panoptic inference is buggy (FREESEG_SPEC §2, §8.3: labels from a sharpened
softmax, a training-class-count filter, thresholds unused, ids cast to uint8); this is the
standard Mask2Former procedure, applied to the scores the meta-architecture provides.
"""
from __future__ import annotations

import torch

from freeseg.utils.errors import FreeSegError

Segment = dict[str, int | float | bool]


def panoptic_inference(
    class_scores: torch.Tensor,
    mask_logits: torch.Tensor,
    is_thing: torch.Tensor,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[torch.Tensor, list[Segment]]:
    """Non-overlapping segments from per-query class scores and masks.

    Each query gets label/score = argmax/max over K; queries with score ≤
    ``object_mask_threshold`` are dropped. Every pixel goes to the kept query with the
    largest score·sigmoid(mask); a query's segment is those pixels where also its own
    sigmoid ≥ 0.5, and is dropped when it keeps less than ``overlap_threshold`` of its own
    mask. Stuff segments of the same class are merged into one id.

    Args:
        class_scores: [Q, K] class probabilities *without* a void column (Mask2Former takes
            softmax over K+1 and drops void; FreeSeg's meta-architecture passes the
            CLIP-ensembled scores, already without void).
        mask_logits: [Q, H, W].
        is_thing: bool [K], True for thing classes.
        object_mask_threshold: minimum class score (strictly greater) to keep a query.
        overlap_threshold: minimum kept-area / own-mask-area ratio.

    Returns:
        (ids int32 [H, W] with 0 = void and segments numbered from 1,
         segments [{"id", "category_id", "isthing", "score", "area"}] in id order).
    """
    if is_thing.shape != class_scores.shape[-1:]:
        raise FreeSegError(
            f"is_thing has {tuple(is_thing.shape)} entries for {class_scores.shape[-1]} classes; "
            f"give one thing/stuff flag per class"
        )
    h, w = mask_logits.shape[-2:]
    panoptic = torch.zeros((h, w), dtype=torch.int32, device=mask_logits.device)
    segments: list[Segment] = []
    if class_scores.shape[0] == 0 or class_scores.shape[1] == 0:
        return panoptic, segments
    scores, labels = class_scores.max(-1)
    keep = scores > object_mask_threshold
    cur_scores, cur_classes = scores[keep], labels[keep]
    cur_masks = mask_logits[keep].sigmoid()
    if cur_masks.shape[0] == 0:
        return panoptic, segments
    cur_mask_ids = (cur_scores[:, None, None] * cur_masks).argmax(0)  # [H, W]
    stuff_segment: dict[int, Segment] = {}
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k])
        isthing = bool(is_thing[pred_class])
        own = cur_masks[k] >= 0.5
        mask = (cur_mask_ids == k) & own
        mask_area, original_area = int((cur_mask_ids == k).sum()), int(own.sum())
        area = int(mask.sum())
        if mask_area == 0 or original_area == 0 or area == 0:
            continue
        if mask_area / original_area < overlap_threshold:
            continue
        score = float(cur_scores[k])
        if not isthing and pred_class in stuff_segment:
            merged = stuff_segment[pred_class]
            panoptic[mask] = int(merged["id"])
            merged["area"] = int(merged["area"]) + area
            merged["score"] = max(float(merged["score"]), score)
            continue
        segment: Segment = {
            "id": len(segments) + 1,
            "category_id": pred_class,
            "isthing": isthing,
            "score": score,
            "area": area,
        }
        panoptic[mask] = int(segment["id"])
        segments.append(segment)
        if not isthing:
            stuff_segment[pred_class] = segment
    return panoptic, segments
