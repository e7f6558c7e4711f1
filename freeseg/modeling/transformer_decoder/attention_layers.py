"""Mask2Former's decoder sub-layers (self-attention, cross-attention, FFN), post- or pre-norm.

Checkpoint names: ``self_attn`` / ``multihead_attn`` (``nn.MultiheadAttention``: ``in_proj_*``,
``out_proj``), ``norm``, ``linear1``, ``linear2``. Inputs are sequence-first [L, B, C], as
``nn.MultiheadAttention`` and the original code use.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


def _xavier(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Query self-attention with residual and LayerNorm; positions added to q and k only."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier(self)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """tgt, query_pos: [Q, B, C] -> [Q, B, C]."""
        if self.normalize_before:
            t = self.norm(tgt)
            q = k = _with_pos(t, query_pos)
            return tgt + self.dropout(self.self_attn(q, k, value=t, need_weights=False)[0])
        q = k = _with_pos(tgt, query_pos)
        tgt = tgt + self.dropout(self.self_attn(q, k, value=tgt, need_weights=False)[0])
        return self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Queries attend to the memory (image features) under an optional boolean mask."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier(self)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt [Q, B, C], memory [HW, B, C], memory_mask bool [B * heads, Q, HW] or [Q, HW] for every
        image and head (True = blocked)."""
        t = self.norm(tgt) if self.normalize_before else tgt
        out = self.multihead_attn(
            query=_with_pos(t, query_pos), key=_with_pos(memory, pos), value=memory,
            attn_mask=memory_mask, need_weights=False,
        )[0]
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Linear -> ReLU -> Linear with residual and LayerNorm."""

    def __init__(
        self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0, normalize_before: bool = False
    ) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """[Q, B, C] -> [Q, B, C]."""
        t = self.norm(tgt) if self.normalize_before else tgt
        tgt = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(t)))))
        return tgt if self.normalize_before else self.norm(tgt)
