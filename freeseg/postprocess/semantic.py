"""Semantic inference: per-class score maps from mask classification."""
from __future__ import annotations

import torch


def semantic_inference(class_scores: torch.Tensor, mask_logits: torch.Tensor, block: int = 1 << 16) -> torch.Tensor:
    """semseg[k] = Σ_q class_scores[q, k] · sigmoid(mask_logits[q]).

    Computed in bands of rows (about ``block`` pixels each) straight into the output, so the
    full-resolution sigmoid [Q, H, W] is never held (245 MB for 100 queries at 640x960, and
    a fresh block that size is what the CPU allocator serves worst). Equal to the one-shot
    product up to float rounding (the matrix product may block its sums differently for a
    band than for the whole image; at 640x960 it measured bit-identical).

    Args:
        class_scores: [Q, K] class probabilities without void (in FreeSeg: the CLIP-ensembled
            scores made by the meta-architecture).
        mask_logits: [Q, H, W].
        block: pixels per band.

    Returns:
        [K, H, W] per-class scores (not normalised over K).
    """
    q, h, w = mask_logits.shape
    k = class_scores.shape[1]
    dtype = torch.promote_types(class_scores.dtype, mask_logits.dtype)
    out = torch.empty(k, h, w, dtype=dtype, device=mask_logits.device)
    scores_t = class_scores.t().to(dtype)
    rows = max(1, block // max(w, 1))
    for top in range(0, h, rows):
        band = mask_logits[:, top : top + rows].sigmoid().to(dtype).reshape(q, -1)
        torch.mm(scores_t, band, out=out[:, top : top + rows].view(k, -1))
    return out
