"""Class-agnostic entity segmentation (the output of Open-World Entity Segmentation)."""
from __future__ import annotations

import torch

Segment = dict[str, int | float]


def entity_inference(
    mask_logits: torch.Tensor,
    quality: torch.Tensor,
    overlap_threshold: float = 0.5,
    score_threshold: float = 0.0,
) -> tuple[torch.Tensor, list[Segment]]:
    """Non-overlapping class-agnostic segments, painted highest quality first.

    Queries with quality ≤ ``score_threshold`` or an empty mask (sigmoid ≥ 0.5 nowhere) are
    dropped. In decreasing quality, a query takes the pixels of its mask that no better
    query took; it is dropped if that is less than ``overlap_threshold`` of its mask.

    Args:
        mask_logits: [Q, H, W].
        quality: [Q] per-query confidence (e.g. 1 − p(void), or a class-score maximum).
        overlap_threshold: minimum fraction of its own mask a segment must keep.
        score_threshold: minimum quality (strictly greater).

    Returns:
        (ids int32 [H, W], 0 = no entity, segments numbered from 1 in quality order;
         segments [{"id", "score", "area"}]).
    """
    h, w = mask_logits.shape[-2:]
    entity = torch.zeros((h, w), dtype=torch.int32, device=mask_logits.device)
    occupied = torch.zeros((h, w), dtype=torch.bool, device=mask_logits.device)
    segments: list[Segment] = []
    # Stable sort: ties keep query order, so the result does not depend on sort internals.
    order = torch.sort(quality, descending=True, stable=True).indices
    for q in order.tolist():
        score = float(quality[q])
        if score <= score_threshold:
            break
        own = mask_logits[q] >= 0  # sigmoid >= 0.5
        own_area = int(own.sum())
        if own_area == 0:
            continue
        new = own & ~occupied
        area = int(new.sum())
        if area == 0 or area / own_area < overlap_threshold:
            continue
        segment: Segment = {"id": len(segments) + 1, "score": score, "area": area}
        entity[new] = int(segment["id"])
        occupied |= new
        segments.append(segment)
    return entity, segments
