"""FreeSeg's ``ContextInteraction``: visual features cross-attend to the text features.

It is the only place where text enters the visual pathway. Two quirks of the original are
reproduced on purpose because released weights were trained with them (FREESEG_SPEC §8.7):
- the key/value LayerNorm is applied again at every one of the 4 feature maps, cumulatively
  (the mask features see ``LN_k(LN_k(LN_k(LN_k(t))))``);
- the residual base is the *normalised* visual feature, not the input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossModalAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (``q_proj`` ... ``out_proj``).

    Args:
        q_dim: width of the visual tokens.
        k_dim: width of the text tokens.
        embed_dim: attention width (split into ``num_heads`` heads).
        num_heads: number of heads.
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, q_dim: int, k_dim: int, embed_dim: int, num_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        self.q_proj = nn.Linear(q_dim, embed_dim)
        self.k_proj = nn.Linear(k_dim, embed_dim)
        self.v_proj = nn.Linear(k_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, q_dim)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, N, q_dim], k/v [B, T, k_dim] -> [B, N, q_dim] (softmax over the T text tokens)."""
        if self._fold_text_side(q.shape[-1], k.shape[1]):
            return self._forward_folded(q, k, v)
        return self._forward_plain(q, k, v)

    def _fold_text_side(self, q_dim: int, t: int) -> bool:
        # Per visual token the plain path costs q_dim*E (q_proj) + E*T (scores) and the same
        # again for the values and out_proj; folding q_proj/out_proj into the T text tokens
        # costs q_dim*heads*T each. With FreeSeg's sizes (q_dim 256, E 2048, 8 heads) folding
        # is always cheaper (2.6x fewer FLOPs at T = 157, on 25,600 tokens of a 640 image).
        e = self.num_heads * self.head_dim
        return q_dim * self.num_heads * t < q_dim * e + e * t

    def _forward_plain(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, _ = q.shape
        t = k.shape[1]
        query = (self.q_proj(q) * self.scale).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(k).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(v).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        weights = (query @ key.transpose(-2, -1)).softmax(dim=-1)  # B h N T
        weights = F.dropout(weights, p=self.dropout, training=self.training)
        out = (weights @ value).transpose(1, 2).reshape(b, n, -1)  # B h N d -> B N h*d
        return self.out_proj(out)

    def _forward_folded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Same result (up to float rounding) with q_proj folded into the keys and out_proj into
        the values: scores_h = q (W_q,h^T K_h^T) + b_q,h K_h^T, out = sum_h A_h (V_h W_o,h^T) + b_o."""
        b, n, c = q.shape
        t, h, d = k.shape[1], self.num_heads, self.head_dim
        key = self.k_proj(k).view(b, t, h, d) * self.scale
        value = self.v_proj(v).view(b, t, h, d)
        w_qk = torch.einsum("hdc,bthd->bcht", self.q_proj.weight.view(h, d, c), key).reshape(b, c, h * t)
        b_qk = torch.einsum("hd,bthd->bht", self.q_proj.bias.view(h, d), key).reshape(b, 1, h * t)
        scores = torch.baddbmm(b_qk, q, w_qk).view(b, n, h, t)  # B N h T
        weights = F.dropout(scores.softmax(dim=-1), p=self.dropout, training=self.training)
        w_vo = torch.einsum("bthd,chd->bhtc", value, self.out_proj.weight.view(c, h, d)).reshape(b, h * t, c)
        return torch.baddbmm(self.out_proj.bias.expand(b, 1, c), weights.view(b, n, h * t), w_vo)


class ContextInteraction(nn.Module):
    """Updates each visual map with attention to the text features (FreeSeg §1b.7).

    Args:
        q_dim: channels of the visual maps (pixel-decoder width, ``EMB_SIZE``).
        k_dim: width of the text features (``PROMPT_DIM`` upstream = CLIP embed dim).
        embed_dim: attention width (``EMBED_DIM``).
        num_heads: heads (``NUM_HEADS``).
        use_layer_scale: residual scaled by the learnable ``gamma`` (init 0.1), else by 1.
        dropout: attention-weight dropout (0.1 hard-coded upstream).
    """

    def __init__(
        self,
        q_dim: int,
        k_dim: int,
        embed_dim: int,
        num_heads: int,
        use_layer_scale: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.layer_norm_q_1 = nn.LayerNorm(q_dim)
        self.layer_norm_k_1 = nn.LayerNorm(k_dim)
        self.attn = CrossModalAttention(q_dim, k_dim, embed_dim, num_heads, dropout=dropout)
        self.use_layer_scale = use_layer_scale
        if use_layer_scale:
            self.gamma = nn.Parameter(0.1 * torch.ones(q_dim))

    def forward(
        self, multi_scale_features: list[torch.Tensor], mask_features: torch.Tensor, text_features: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Condition the visual maps on the text.

        Args:
            multi_scale_features: 3 maps [B, C, H_l, W_l].
            mask_features: [B, C, H/4, W/4].
            text_features: [K+1, D] (shared by the batch) or [B, K+1, D].
        Returns:
            the updated multi-scale maps and mask features, same shapes.
        """
        maps = [*multi_scale_features, mask_features]
        text = text_features if text_features.dim() == 3 else text_features.unsqueeze(0)
        text = text.expand(maps[0].shape[0], -1, -1).to(maps[0].dtype)
        outputs = []
        for x in maps:
            b, c, h, w = x.shape
            q = self.layer_norm_q_1(x.flatten(2).transpose(1, 2))  # B C H W -> B HW C
            text = self.layer_norm_k_1(text)  # cumulative on purpose (see module docstring)
            delta = self.attn(q, text, text)
            q = q + (self.gamma * delta if self.use_layer_scale else delta)
            outputs.append(q.transpose(1, 2).reshape(b, c, h, w))
        return outputs[:-1], outputs[-1]
