"""``MSDeformAttn``: the multi-scale deformable attention module of Deformable-DETR / Mask2Former.

Parameter names, shapes and initialisation match the original so released checkpoints load
unchanged; the sampling itself goes through :func:`ms_deform_attn`, which picks the compiled
kernel or the PyTorch path (``impl``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from freeseg.utils.errors import FreeSegError

from .function import IMPLS, ms_deform_attn


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` learned locations around its reference point on each level.

    Args:
        d_model: channels C of queries and values.
        n_levels: number of feature levels L.
        n_heads: attention heads H (C must be divisible by H; head dim D = C / H).
        n_points: sampling points P per head and level.
        impl: ``"auto"``, ``"pytorch"``, ``"cpu"`` or ``"cuda"`` (see :func:`ms_deform_attn`).
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise FreeSegError(
                f"MSDeformAttn: d_model={d_model} is not divisible by n_heads={n_heads}; "
                "pick n_heads that divides d_model"
            )
        if impl not in IMPLS:
            raise FreeSegError(f"MSDeformAttn: unknown impl {impl!r}; use one of {', '.join(IMPLS)}")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.impl = impl
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Offsets start on a ring: head k looks along angle 2πk/H, point i at distance i+1
        # (in pixels of each level, after the division by the level size in forward).
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
        level_shapes: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """Attend from queries to the flattened multi-scale feature maps.

        Args:
            query: [N, Lq, C].
            reference_points: [N, Lq, L, 2] as (x, y) in [0, 1] (top-left 0, bottom-right 1),
                or [N, Lq, L, 4] as (cx, cy, w, h) boxes, offsets then scale with the box.
            input_flatten: [N, S, C], levels flattened row-major and concatenated.
            input_spatial_shapes: int64 [L, 2] of (height, width); sum of h*w = S.
            input_level_start_index: int64 [L], offset of each level in S.
            input_padding_mask: bool [N, S], True = padding (its values read as zero), or None.
            level_shapes: ``input_spatial_shapes`` as Python numbers, where the caller has them
                (the PyTorch path then needs no tensor values: exportable with symbolic sizes).

        Returns:
            [N, Lq, C].
        """
        n, n_queries, _ = query.shape
        _, n_in, _ = input_flatten.shape
        self._check_shapes(input_flatten, input_spatial_shapes, reference_points, level_shapes)

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, n_in, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            n, n_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(query).view(n, n_queries, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, n_queries, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: divide by (w, h) to get [0, 1] units
            normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)
            locations = (
                reference_points[:, :, None, :, None, :]
                + offsets / normalizer[None, None, None, :, None, :]
            )
        else:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        output = ms_deform_attn(
            value, input_spatial_shapes, input_level_start_index, locations, weights, impl=self.impl,
            level_shapes=level_shapes,
        )
        return self.output_proj(output)

    def _check_shapes(
        self,
        input_flatten: torch.Tensor,
        spatial_shapes: torch.Tensor,
        reference_points: torch.Tensor,
        level_shapes: Sequence[tuple[int, int]] | None,
    ) -> None:
        if spatial_shapes.shape != (self.n_levels, 2) or (level_shapes is not None and len(level_shapes) != self.n_levels):
            raise FreeSegError(
                f"MSDeformAttn: input_spatial_shapes has shape {tuple(spatial_shapes.shape)}, "
                f"expected ({self.n_levels}, 2) for n_levels={self.n_levels}"
            )
        if level_shapes is None:
            total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
        else:
            total = sum(h * w for h, w in level_shapes)
        if total != input_flatten.shape[1]:
            raise FreeSegError(
                f"MSDeformAttn: input_spatial_shapes cover {total} positions but input_flatten has "
                f"{input_flatten.shape[1]}; pass the (h, w) of every flattened level"
            )
        if reference_points.shape[-1] not in (2, 4) or reference_points.shape[-2] != self.n_levels:
            raise FreeSegError(
                f"MSDeformAttn: reference_points has shape {tuple(reference_points.shape)}, "
                f"expected [N, Lq, {self.n_levels}, 2 or 4]"
            )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
            f"n_points={self.n_points}, impl={self.impl!r}"
        )
