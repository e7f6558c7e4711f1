"""Semantic inference: per-class score maps from mask classification."""
from __future__ import annotations

import torch


def semantic_inference(class_scores: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """semseg[k] = Σ_q class_scores[q, k] · sigmoid(mask_logits[q]).

    Args:
        class_scores: [Q, K] class probabilities without void (in FreeSeg: the CLIP-ensembled
            scores made by the meta-architecture).
        mask_logits: [Q, H, W].

    Returns:
        [K, H, W] per-class scores (not normalised over K).
    """
    return torch.einsum("qk,qhw->khw", class_scores, mask_logits.sigmoid())
