"""Set criterion: Hungarian-match predictions to targets, then class, mask and dice losses.

Two mask-loss flavours (``mask_loss``):

- ``"focal_full"`` — FreeSeg's (MaskFormer-v1): matched mask logits are upsampled bilinearly
  (``align_corners=False``) to the full padded target size; sigmoid focal loss (α 0.25, γ 2)
  and dice on every pixel. Faithful, but the [M, Hp, Wp] upsampled logits, their sigmoid and
  the focal terms dominate training memory.
- ``"point_bce"`` — Mask2Former's: sigmoid BCE and dice on ``num_points`` points per mask,
  ``importance_sample_ratio`` of them at the most uncertain logits (PointRend). Much less
  memory; a different objective, so released FreeSeg checkpoints were not trained with it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from freeseg.losses.mask_losses import dice_loss, sigmoid_ce_loss, sigmoid_focal_loss
from freeseg.losses.point_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from freeseg.utils import comm
from freeseg.utils.errors import FreeSegError

MASK_LOSSES = ("focal_full", "point_bce")

Indices = list[tuple[torch.Tensor, torch.Tensor]]
Matcher = Callable[[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]], Indices]


class SetCriterion(nn.Module):
    """Losses of a mask-classification model (MaskFormer / Mask2Former / FreeSeg).

    ``forward`` returns *unweighted* losses: ``loss_ce``, ``loss_mask``, ``loss_dice`` for the
    final prediction and ``loss_ce_i`` … for auxiliary prediction i. ``weight_dict`` holds the
    weights; :func:`apply_loss_weights` multiplies them in and drops unweighted entries.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: Matcher,
        weight_dict: dict[str, float],
        eos_coef: float,
        mask_loss: str = "focal_full",
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        """
        Args:
            num_classes: K, the number of real classes; logits have K+1 columns (last = void).
            matcher: callable(outputs, targets) -> per-image (query idx, target idx).
            weight_dict: loss name -> weight (kept here for the caller, not applied).
            eos_coef: cross-entropy weight of the void class (``NO_OBJECT_WEIGHT``).
            mask_loss: "focal_full" or "point_bce" (see the module docstring).
            num_points, oversample_ratio, importance_sample_ratio: "point_bce" sampling.
            focal_alpha, focal_gamma: "focal_full" focal-loss parameters.
        """
        super().__init__()
        if mask_loss not in MASK_LOSSES:
            raise FreeSegError(
                f"unknown mask loss {mask_loss!r}; set MODEL.MASK_FORMER.LOSS_TYPE to one of {MASK_LOSSES}"
            )
        if num_classes < 1:
            raise FreeSegError(f"criterion needs at least one class, got NUM_CLASSES={num_classes}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.mask_loss = mask_loss
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        # Persistent: FreeSeg checkpoints carry it as `criterion.empty_weight` [K+1].
        self.register_buffer("empty_weight", empty_weight)

    # ---- individual losses -------------------------------------------------------------
    def loss_labels(
        self, outputs: dict[str, torch.Tensor], targets: list[dict], indices: Indices
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy over K+1; unmatched queries are trained towards void (class K)."""
        logits = outputs["pred_logits"].float()  # [B, Q, K+1]
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        batch_idx, query_idx = _src_permutation(indices)
        matched = [t["labels"][tgt] for t, (_, tgt) in zip(targets, indices)]
        if batch_idx.numel():
            target_classes[batch_idx, query_idx] = torch.cat(matched).to(logits.device)
        loss = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight.to(logits))
        return {"loss_ce": loss}

    def loss_masks(
        self, outputs: dict[str, torch.Tensor], targets: list[dict], indices: Indices, num_masks: float
    ) -> dict[str, torch.Tensor]:
        """Mask (focal or BCE) and dice losses of the matched pairs."""
        batch_idx, query_idx = _src_permutation(indices)
        pred = outputs["pred_masks"]
        if batch_idx.numel() == 0:
            # No targets in the whole batch: zero losses that still reach the mask head, so
            # every parameter gets a gradient (DDP requires it).
            zero = pred.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        src = pred[batch_idx.to(pred.device), query_idx.to(pred.device)].float()  # [M, h, w]
        tgt = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices)]).to(src)  # [M, Hp, Wp]
        if self.mask_loss == "focal_full":
            src = F.interpolate(src[:, None], size=tgt.shape[-2:], mode="bilinear", align_corners=False)
            src, tgt = src.flatten(1), tgt.flatten(1)
            return {
                "loss_mask": sigmoid_focal_loss(src, tgt, num_masks, self.focal_alpha, self.focal_gamma),
                "loss_dice": dice_loss(src, tgt, num_masks),
            }
        src, tgt = src[:, None], tgt[:, None]
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                src, calculate_uncertainty, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio,
            )
            point_labels = point_sample(tgt, coords, align_corners=False)[:, 0]  # [M, P]
        point_logits = point_sample(src, coords, align_corners=False)[:, 0]  # [M, P]
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    # ---- driver ------------------------------------------------------------------------
    def forward(
        self, outputs: dict, targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            outputs: {"pred_logits": [B, Q, K+1], "pred_masks": [B, Q, h, w],
                "aux_outputs" (optional): list of dicts with the same two keys}.
            targets: B dicts {"labels": int64 [N_b] in [0, K), "masks": bool/float
                [N_b, Hp, Wp]}, all zero-padded to the same (padded batch) size.

        Returns:
            unweighted scalar losses: loss_ce, loss_mask, loss_dice, and loss_*_i per aux output.
        """
        self._check(outputs, targets)
        num_masks = self.num_masks(targets, outputs["pred_logits"].device)
        predictions = [(outputs, "")] + [
            (aux, f"_{i}") for i, aux in enumerate(outputs.get("aux_outputs", []))
        ]
        losses: dict[str, torch.Tensor] = {}
        for out, suffix in predictions:
            indices = self.matcher(out, targets)
            for name, value in self.loss_labels(out, targets, indices).items():
                losses[name + suffix] = value
            for name, value in self.loss_masks(out, targets, indices, num_masks).items():
                losses[name + suffix] = value
        return losses

    @staticmethod
    def num_masks(targets: list[dict[str, torch.Tensor]], device: torch.device) -> float:
        """Average number of target masks per process (all-reduced), at least 1."""
        total = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(total)
        return torch.clamp(total / comm.get_world_size(), min=1).item()

    def _check(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> None:
        logits = outputs["pred_logits"]
        if logits.shape[-1] != self.num_classes + 1:
            raise FreeSegError(
                f"pred_logits have {logits.shape[-1]} columns but the criterion expects "
                f"NUM_CLASSES+1 = {self.num_classes + 1}; set MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                f"to the number of training classes"
            )
        if len(targets) != logits.shape[0]:
            raise FreeSegError(f"criterion got {len(targets)} targets for a batch of {logits.shape[0]} images")
        sizes = {tuple(t["masks"].shape[-2:]) for t in targets}
        if len(sizes) > 1:
            raise FreeSegError(f"target masks have different sizes {sorted(sizes)}; pad them to the batch's padded size")
        for t in targets:
            labels, masks = t["labels"], t["masks"]
            if masks.dim() != 3 or masks.shape[0] != labels.shape[0]:
                raise FreeSegError(
                    f"target masks {tuple(masks.shape)} do not match labels {tuple(labels.shape)}; "
                    f"expected masks [N, Hp, Wp] with one mask per label"
                )
            bad = labels[(labels < 0) | (labels >= self.num_classes)]
            if bad.numel():
                raise FreeSegError(
                    f"target label {int(bad[0])} outside [0, {self.num_classes}); "
                    f"map labels to contiguous training ids (255/ignore must not reach the criterion)"
                )


def _src_permutation(indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch index, query index) of every matched prediction, image after image."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    return batch_idx, query_idx


def apply_loss_weights(
    losses: dict[str, torch.Tensor], weight_dict: dict[str, float]
) -> dict[str, torch.Tensor]:
    """Weighted losses, as FreeSeg's model returns them: entries without a weight are dropped.

    (With FreeSeg's weight dict this drops the last auxiliary output's losses.)
    """
    return {k: v * weight_dict[k] for k, v in losses.items() if k in weight_dict}
