"""Per-mask losses (for matched pairs) and pairwise costs (for the Hungarian matcher).

Inputs are mask *logits* flattened to [N, P] (P = pixels or sampled points); targets are
{0, 1} floats of the same layout. The matched-pair losses are summed over masks and divided
by ``num_masks`` (the batch's — all-reduced — number of target masks), as in MaskFormer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Σ_n [1 − (2·Σ p·t + 1) / (Σ p + Σ t + 1)] / num_masks, p = sigmoid(inputs).

    Args:
        inputs: [N, P] logits; targets: [N, P] in {0, 1}.
    """
    prob = inputs.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    num_masks: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """RetinaNet's sigmoid focal loss, mean over P, summed over N, / num_masks (MaskFormer-v1).

    Args:
        inputs: [N, P] logits; targets: [N, P] in {0, 1}. ``alpha < 0`` disables weighting.
    """
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy with logits, mean over P, summed over N, / num_masks (Mask2Former).

    Args:
        inputs: [N, P] logits; targets: [N, P] in {0, 1}.
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def pairwise_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction against every target.

    Args:
        inputs: [N, P] logits; targets: [M, P] in {0, 1}.

    Returns:
        [N, M] costs.
    """
    prob = inputs.sigmoid()
    numerator = 2 * prob @ targets.T
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_sigmoid_focal_cost(
    inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (mean over P) of every prediction against every target.

    The per-pixel loss is split into its target=1 and target=0 parts so that the [N, M, P]
    product never materialises: two [N, P] × [P, M] matrix products instead.

    Args:
        inputs: [N, P] logits; targets: [M, P] in {0, 1}.

    Returns:
        [N, M] costs.
    """
    hw = inputs.shape[1]
    prob = inputs.sigmoid()
    focal_pos = ((1 - prob) ** gamma) * F.binary_cross_entropy_with_logits(
        inputs, torch.ones_like(inputs), reduction="none"
    )
    focal_neg = (prob**gamma) * F.binary_cross_entropy_with_logits(
        inputs, torch.zeros_like(inputs), reduction="none"
    )
    if alpha >= 0:
        focal_pos = focal_pos * alpha
        focal_neg = focal_neg * (1 - alpha)
    loss = focal_pos @ targets.T + focal_neg @ (1 - targets).T
    return loss / hw


def pairwise_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy (mean over P) of every prediction against every target.

    Args:
        inputs: [N, P] logits; targets: [M, P] in {0, 1}.

    Returns:
        [N, M] costs.
    """
    hw = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / hw
