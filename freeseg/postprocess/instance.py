"""Instance inference: Mask2Former's top-k over queries × classes, with mask-quality scores.

FreeSeg's own instance inference is buggy (FREESEG_SPEC §2, §8.2: one label per query, the
last class dropped twice, thresholds on logits, all-zero boxes); this is Mask2Former's, plus
boxes computed from the masks.
"""
from __future__ import annotations

import torch

from freeseg.utils.errors import FreeSegError


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of bool masks, detectron2's ``BitMasks.get_bounding_boxes`` convention.

    x2/y2 are one past the last set column/row (so a 1-pixel mask has width 1); empty masks
    get zeros. (torchvision's ``masks_to_boxes`` uses inclusive maxima and fails on empty
    masks, hence this version.)

    Args:
        masks: bool [N, H, W].

    Returns:
        float32 [N, 4] (x1, y1, x2, y2).
    """
    h, w = masks.shape[-2:]
    cols, rows = masks.any(1), masks.any(2)  # [N, W], [N, H]
    # argmax over a bool row finds the first True; on the flipped row, the last one.
    x1 = cols.byte().argmax(1)
    x2 = w - cols.flip(1).byte().argmax(1)
    y1 = rows.byte().argmax(1)
    y2 = h - rows.flip(1).byte().argmax(1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    boxes[~cols.any(1)] = 0
    return boxes


def instance_inference(
    class_scores: torch.Tensor,
    mask_logits: torch.Tensor,
    is_thing: torch.Tensor | None = None,
    topk: int = 100,
) -> dict[str, torch.Tensor]:
    """Top-k (query, class) pairs as instances.

    Args:
        class_scores: [Q, K] class probabilities without void (see ``panoptic_inference``).
        mask_logits: [Q, H, W].
        is_thing: bool [K]; when given, pairs with a stuff class are dropped after the top-k
            (as Mask2Former does when panoptic inference is on). None keeps every class.
        topk: number of pairs kept before the thing filter (``TEST_TOPK_PER_IMAGE``).

    Returns:
        {"pred_masks": bool [N, H, W] (logit > 0), "scores": float [N] = class score × mean
         sigmoid inside the mask, "pred_classes": int64 [N], "pred_boxes": float [N, 4] XYXY
         from the masks}, in decreasing class-score order.
    """
    num_queries, num_classes = class_scores.shape
    if is_thing is not None and is_thing.shape != (num_classes,):
        raise FreeSegError(
            f"is_thing has {tuple(is_thing.shape)} entries for {num_classes} classes; "
            f"give one thing/stuff flag per class"
        )
    if topk < 1:
        raise FreeSegError(f"instance top-k must be >= 1, got {topk}; fix TEST_TOPK_PER_IMAGE")
    k = min(topk, num_queries * num_classes)
    scores, flat_idx = class_scores.flatten().topk(k, sorted=True)
    labels = flat_idx % num_classes
    query_idx = flat_idx // num_classes
    if is_thing is not None:
        keep = is_thing.to(labels.device)[labels]
        scores, labels, query_idx = scores[keep], labels[keep], query_idx[keep]
    logits = mask_logits[query_idx]  # [N, H, W]
    masks = logits > 0
    maskf = masks.flatten(1).float()
    mask_scores = (logits.sigmoid().flatten(1) * maskf).sum(1) / (maskf.sum(1) + 1e-6)
    return {
        "pred_masks": masks,
        "scores": scores * mask_scores,
        "pred_classes": labels.to(torch.int64),
        "pred_boxes": masks_to_boxes(masks),
    }
