"""Multi-scale deformable attention in plain PyTorch (``F.grid_sample``), the path that works anywhere.

This is exactly what the original (Deformable-DETR / Mask2Former) computes on CPU, where its
compiled op is missing and ``MSDeformAttn.forward`` falls back to ``ms_deform_attn_core_pytorch``.
The compiled kernels in ``freeseg/layers/csrc`` follow the same sampling convention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor | list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinear sampling of every level at every location, weighted and summed over levels and points.

    Args:
        value: [N, S, H, D], the L levels flattened row-major and concatenated along S.
        spatial_shapes: int64 [L, 2] of (height, width) per level, sum of h*w = S.
        sampling_locations: [N, Lq, H, L, P, 2] as (x, y) in [0, 1] of each level
            (0 = left/top edge of the first pixel, 1 = right/bottom edge of the last).
        attention_weights: [N, Lq, H, L, P].

    Returns:
        [N, Lq, H*D]. Locations outside the map read zeros (``padding_mode="zeros"``),
        pixel centres sit at (i + 0.5) / size (``align_corners=False``).
    """
    n, _, n_heads, head_dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = spatial_shapes.tolist() if isinstance(spatial_shapes, torch.Tensor) else list(spatial_shapes)
    value_list = value.split([h * w for h, w in shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for level, (h, w) in enumerate(shapes):
        # N, h*w, H, D -> N, h*w, H*D -> N, H*D, h*w -> N*H, D, h, w
        value_l = value_list[level].flatten(2).transpose(1, 2).reshape(n * n_heads, head_dim, h, w)
        # N, Lq, H, P, 2 -> N, H, Lq, P, 2 -> N*H, Lq, P, 2
        grid_l = sampling_grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # N*H, D, Lq, P
        sampled.append(
            F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # N, Lq, H, L, P -> N, H, Lq, L, P -> N*H, 1, Lq, L*P
    weights = attention_weights.transpose(1, 2).reshape(n * n_heads, 1, n_queries, n_levels * n_points)
    # N*H, D, Lq, L, P -> N*H, D, Lq, L*P -> (weighted sum) -> N, H*D, Lq
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(n, n_heads * head_dim, n_queries)
    return output.transpose(1, 2).contiguous()
