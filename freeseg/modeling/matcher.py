"""Hungarian matching of predicted masks to ground-truth masks (one image at a time).

Two mask costs, picked by the same switch as the criterion (``MODEL.MASK_FORMER.LOSS_TYPE``):

- ``"focal"`` (FreeSeg / MaskFormer-v1): sigmoid focal + dice cost at the *prediction*
  resolution, the ground truth nearest-downsampled to it;
- ``"point_bce"`` (Mask2Former): sigmoid BCE + dice cost on ``num_points`` uniformly random
  points, the same points for all predictions and targets of an image.

The class cost is −p[target class] with p = softmax over K+1. The assignment itself is
scipy's ``linear_sum_assignment``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from freeseg.losses.mask_losses import (
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    pairwise_sigmoid_focal_cost,
)
from freeseg.losses.point_sampling import point_sample
from freeseg.utils.errors import FreeSegError

MASK_COSTS = ("focal", "point_bce")

Indices = list[tuple[torch.Tensor, torch.Tensor]]


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising cost_class·C_cls + cost_mask·C_mask + cost_dice·C_dice."""

    def __init__(
        self,
        *,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        mask_cost: str = "focal",
        num_points: int = 12544,
    ) -> None:
        """
        Args:
            cost_class, cost_mask, cost_dice: weights of the three costs.
            mask_cost: "focal" (full prediction resolution) or "point_bce" (sampled points).
            num_points: points per image for "point_bce".
        """
        super().__init__()
        if mask_cost not in MASK_COSTS:
            raise FreeSegError(f"unknown matcher mask cost {mask_cost!r}; use one of {MASK_COSTS}")
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise FreeSegError("all matcher costs are 0; set MASK_WEIGHT/DICE_WEIGHT/CLASS_WEIGHT")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.mask_cost = mask_cost
        self.num_points = num_points

    def _mask_costs(
        self, out_mask: torch.Tensor, tgt_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[Q, h, w] float logits vs [N, Hp, Wp] bool/float targets -> ([Q, N] mask cost,
        [Q, N] dice cost)."""
        if self.mask_cost == "focal":
            # GT goes down to the prediction size: this is what keeps FreeSeg's matcher cheap.
            # Nearest picks the same pixels in any dtype, so bool masks go down as uint8
            # (4x less to read than float) and become float only at the small size.
            small = tgt_mask.to(torch.uint8) if tgt_mask.dtype == torch.bool else tgt_mask
            tgt = F.interpolate(small[:, None], size=out_mask.shape[-2:], mode="nearest")[:, 0].to(out_mask)
            out_flat, tgt_flat = out_mask.flatten(1), tgt.flatten(1)
            return pairwise_sigmoid_focal_cost(out_flat, tgt_flat), pairwise_dice_cost(out_flat, tgt_flat)
        tgt_mask = tgt_mask.to(out_mask)
        coords = torch.rand(1, self.num_points, 2, device=out_mask.device)
        tgt_pts = point_sample(
            tgt_mask[:, None], coords.expand(tgt_mask.shape[0], -1, -1), align_corners=False
        )[:, 0]
        out_pts = point_sample(
            out_mask[:, None], coords.expand(out_mask.shape[0], -1, -1), align_corners=False
        )[:, 0]
        # Costs in fp32 even under autocast: BCE on half-precision logits loses the ranking.
        out_pts, tgt_pts = out_pts.float(), tgt_pts.float()
        return pairwise_sigmoid_ce_cost(out_pts, tgt_pts), pairwise_dice_cost(out_pts, tgt_pts)

    @torch.no_grad()
    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> Indices:
        """
        Args:
            outputs: {"pred_logits": [B, Q, K+1] (last = void), "pred_masks": [B, Q, h, w]}.
            targets: B dicts {"labels": int64 [N_b], "masks": [N_b, Hp, Wp]}.

        Returns:
            B pairs (query indices int64 [n_b], target indices int64 [n_b]), n_b = min(Q, N_b),
            sorted by query index.
        """
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if len(targets) != logits.shape[0]:
            raise FreeSegError(f"matcher got {len(targets)} targets for a batch of {logits.shape[0]}")
        indices: Indices = []
        for b, target in enumerate(targets):
            labels = target["labels"]
            if labels.numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            prob = logits[b].float().softmax(-1)  # [Q, K+1]
            cost_class = -prob[:, labels]
            out_mask = masks[b].float()
            cost_mask, cost_dice = self._mask_costs(out_mask, target["masks"])
            cost = self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
            # A diverged step (NaN logits) must reach the trainer's non-finite-loss policy
            # rather than crash scipy here.
            cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
