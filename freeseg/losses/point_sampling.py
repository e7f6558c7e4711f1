"""Point sampling for Mask2Former's memory-saving mask losses (PointRend's helpers).

Coordinates are normalised to [0, 1] × [0, 1] as (x, y); sampling is bilinear through
``grid_sample`` with ``align_corners=False``, as in detectron2's ``point_sample``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from freeseg.utils.errors import FreeSegError


def point_sample(inputs: torch.Tensor, point_coords: torch.Tensor, **kwargs) -> torch.Tensor:
    """Sample ``inputs`` at normalised points.

    Args:
        inputs: [N, C, H, W] maps.
        point_coords: [N, P, 2] or [N, Hg, Wg, 2] points in [0, 1], (x, y) order.
        kwargs: passed to ``F.grid_sample`` (e.g. ``align_corners``).

    Returns:
        [N, C, P] (or [N, C, Hg, Wg] for a 4-d grid).
    """
    flat = point_coords.dim() == 3
    grid = point_coords.unsqueeze(2) if flat else point_coords
    out = F.grid_sample(inputs, 2.0 * grid - 1.0, **kwargs)
    return out.squeeze(3) if flat else out


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of [N, 1, P] mask logits: −|logit|, highest at the decision boundary."""
    return -torch.abs(logits)


def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> torch.Tensor:
    """PointRend's training-time point selection.

    Draw ``num_points · oversample_ratio`` uniform points, keep the
    ``importance_sample_ratio · num_points`` most uncertain of them, and fill up to
    ``num_points`` with fresh uniform points.

    Args:
        coarse_logits: [N, 1, H, W] mask logits.
        uncertainty_func: [N, 1, P] logits -> [N, 1, P] uncertainty (higher = less certain).

    Returns:
        [N, num_points, 2] coordinates in [0, 1].
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise FreeSegError(
            f"point sampling needs OVERSAMPLE_RATIO >= 1 and 0 <= IMPORTANCE_SAMPLE_RATIO <= 1, "
            f"got {oversample_ratio} and {importance_sample_ratio}; fix MODEL.MASK_FORMER"
        )
    num_boxes = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    device = coarse_logits.device
    point_coords = torch.rand(num_boxes, num_sampled, 2, device=device)
    point_logits = point_sample(coarse_logits, point_coords, align_corners=False)
    point_uncertainties = uncertainty_func(point_logits)  # [N, 1, num_sampled]
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(point_uncertainties[:, 0, :], k=num_uncertain, dim=1)[1]
    point_coords = torch.gather(point_coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        fresh = torch.rand(num_boxes, num_random, 2, device=device)
        point_coords = torch.cat([point_coords, fresh], dim=1)
    return point_coords
