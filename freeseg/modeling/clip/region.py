"""Mask-region crops for CLIP and the CLIP/segmenter score ensemble (FreeSeg's numerics).

Pure functions on tensors; :class:`~freeseg.modeling.clip.adapter.MaskFormerClipAdapter`
wires them to CLIP. Every rounding and interpolation choice below is the original's, so that
released weights give the same region scores.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

# OpenAI CLIP's input statistics (on 0..1 images).
CLIP_PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks, detectron2's ``BitMasks.get_bounding_boxes``.

    Args:
        masks: bool [N, H, W].
    Returns:
        float [N, 4] as (min col, min row, max col + 1, max row + 1); zeros for empty masks.
    """
    n, h, w = masks.shape
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [N, W], [N, H]
    nonempty = cols.any(dim=1)
    x1 = cols.float().argmax(dim=1)
    x2 = w - cols.flip(1).float().argmax(dim=1)
    y1 = rows.float().argmax(dim=1)
    y2 = h - rows.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return boxes * nonempty[:, None]


def expand_box(box: list[float], ratio: float, height: int, width: int) -> tuple[int, int, int, int]:
    """Scale a box about its centre by ``ratio``, truncate with ``int()``, clip to the image."""
    x1, y1, x2, y2 = box
    cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    bw, bh = (x2 - x1) * ratio, (y2 - y1) * ratio
    left, top, right, bottom = (int(v) for v in (cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh))
    return max(left, 0), max(top, 0), min(right, width), min(bottom, height)


def crop_regions(
    image: Tensor,
    masks: Tensor,
    boxes: Tensor,
    *,
    fill: Tensor,
    pixel_mean: Tensor,
    pixel_std: Tensor,
    expand_ratio: float = 1.0,
    size: int = 224,
) -> Tensor:
    """Masked, box-cropped, normalised and resized regions ready for CLIP's visual encoder.

    Args:
        image: [3, H, W] in 0..255 (any dtype).
        masks: [N, H, W] binary or soft (``MASK_MATTING``) weights in 0..1.
        boxes: [N, 4] from :func:`mask_boxes`.
        fill: [3] value outside the mask, on the 0..255 scale (CLIP mean×255 or 0).
        pixel_mean, pixel_std: [3] CLIP statistics on the 0..255 scale.
    Returns:
        float [N, 3, size, size].
    """
    image = image.float()
    _, h, w = image.shape
    fill, mean, std = (t.to(image).view(3, 1, 1) for t in (fill, pixel_mean, pixel_std))
    regions = []
    for box, mask in zip(boxes.tolist(), masks):
        left, top, right, bottom = expand_box(box, expand_ratio, h, w)
        m = mask[None, top:bottom, left:right].to(image.dtype)
        region = image[:, top:bottom, left:right] * m + (1 - m) * fill
        region = (region - mean) / std
        # The original resizes each crop with bicubic, align_corners=True.
        regions.append(F.interpolate(region[None], size=(size, size), mode="bicubic", align_corners=True))
    if not regions:
        return image.new_zeros(0, 3, size, size)
    return torch.cat(regions)


def ensemble_scores(
    mask_probs: Tensor,
    clip_probs: Tensor,
    valid: Tensor,
    trainable_flag: Tensor | None,
    weight: float,
) -> tuple[Tensor, Tensor]:
    """FreeSeg's geometric ensemble of segmenter and CLIP class probabilities.

    s = f·p^λ·c^(1−λ) + (1−f)·p^(1−λ)·c^λ with f = trainable_flag (1 = seen class; None = all
    unseen, as for custom vocabularies), λ = ``weight``; queries CLIP did not score have c = 1.
    With λ ≤ 0 CLIP alone decides: s = c, and only the valid queries are kept.

    Args:
        mask_probs: p [Q, K] (softmax over K+1, void dropped).
        clip_probs: c [Q, K] (1 where not valid).
        valid: bool [Q], queries whose mask was cropped and scored by CLIP.
        trainable_flag: [K] 0/1 or None.
    Returns:
        (scores [Q', K], keep bool [Q]) with Q' = keep.sum().
    """
    if weight <= 0:
        return clip_probs[valid], valid
    if trainable_flag is None:
        seen = mask_probs.new_zeros(1, mask_probs.shape[1])
    else:
        seen = torch.as_tensor(trainable_flag, dtype=mask_probs.dtype, device=mask_probs.device)[None, :]
    scores = seen * mask_probs.pow(weight) * clip_probs.pow(1 - weight) + (1 - seen) * mask_probs.pow(
        1 - weight
    ) * clip_probs.pow(weight)
    return scores, torch.ones_like(valid)
