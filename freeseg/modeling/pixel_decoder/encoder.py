"""Deformable-DETR's encoder as Mask2Former uses it (encoder only, no padding masks).

Names match the checkpoints: ``transformer.level_embed``, ``transformer.encoder.layers.{i}.
{self_attn, norm1, linear1, linear2, norm2}``.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from freeseg.layers.ms_deform_attn import MSDeformAttn


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention + residual + LN, FFN + residual + LN."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, impl=impl)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        level_shapes: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """src, pos: [B, S, C]; reference_points [B, S, L, 2] -> [B, S, C]."""
        src2 = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index,
                              level_shapes=level_shapes)
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout2(F.relu(self.linear1(src), inplace=True)))
        return self.norm2(src + self.dropout3(src2))


class MSDeformAttnEncoder(nn.Module):
    """A stack of identical encoder layers (``layers.{i}``)."""

    def __init__(self, layer: MSDeformAttnEncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    @staticmethod
    def reference_points(
        spatial_shapes: torch.Tensor | Sequence[tuple[int, int]], batch: int, device: torch.device
    ) -> torch.Tensor:
        """Pixel centres of every level in [0, 1] units: [B, S, L, 2] as (x, y).

        Without padding every valid ratio is 1, so each point has the same coordinates on
        every level (Deformable-DETR's valid-ratio scaling is the identity here).
        """
        shapes = spatial_shapes.tolist() if isinstance(spatial_shapes, torch.Tensor) else spatial_shapes
        points = []
        for h, w in shapes:
            # i + 0.5: the values of linspace(0.5, n - 0.5, n) exactly (integers and halves are
            # exact in float32), written so that an exported graph keeps h and w symbolic
            ref_y, ref_x = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=device) + 0.5,
                indexing="ij",
            )
            points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
        ref = torch.cat(points, 0)  # S 2
        return ref[None, :, None, :].expand(batch, -1, len(shapes), -1)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        level_shapes: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """src, pos: [B, S, C] -> [B, S, C]; ``level_shapes``: the (h, w) of ``spatial_shapes``
        as Python numbers (read from the maps' sizes, so nothing waits on tensor values)."""
        ref = self.reference_points(spatial_shapes if level_shapes is None else level_shapes, src.shape[0], src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes, level_start_index, level_shapes)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens the levels, adds level embeddings to the positions, runs the encoder.

    Args:
        d_model: channels C of every level.
        nhead, num_encoder_layers, dim_feedforward, dropout: encoder sizes.
        num_feature_levels: L.
        enc_n_points: sampling points per head and level.
        impl: deformable-attention kernel choice (see ``MSDeformAttn``).
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        layer = MSDeformAttnEncoderLayer(
            d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points, impl=impl
        )
        self.encoder = MSDeformAttnEncoder(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode L maps [B, C, H_l, W_l] (with positions of the same shape).

        Returns:
            memory [B, S, C] (S = sum H_l * W_l, levels in input order), spatial_shapes int64
            [L, 2], level_start_index int64 [L].
        """
        src_flat, pos_flat, shapes = [], [], []
        for lvl, (src, pos) in enumerate(zip(srcs, pos_embeds)):
            shapes.append((src.shape[-2], src.shape[-1]))
            src_flat.append(src.flatten(2).transpose(1, 2))  # B C H W -> B HW C
            pos_flat.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        spatial_shapes = shapes_tensor(shapes, srcs[0].device)
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        memory = self.encoder(torch.cat(src_flat, 1), torch.cat(pos_flat, 1), spatial_shapes, level_start_index,
                              level_shapes=shapes)
        return memory, spatial_shapes, level_start_index


def shapes_tensor(shapes: Sequence[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """int64 [L, 2] of the (h, w) pairs. Sizes that an export traces as symbols (not plain ints)
    are stacked from scalars, since ``as_tensor`` would fix them to the traced example's."""
    if all(isinstance(v, int) for hw in shapes for v in hw):
        return torch.as_tensor(shapes, dtype=torch.long, device=device)
    return torch.stack([torch.stack([torch.scalar_tensor(v, dtype=torch.long, device=device) for v in hw])
                        for hw in shapes])
