"""Mask2Former's masked-attention transformer decoder with FreeSeg's class-embedding MLP.

FreeSeg changes two things against Mask2Former: the class head is an MLP producing an
embedding (compared with text features outside the head) instead of a linear classifier, and
the decoder has ``DEC_LAYERS`` layers (Mask2Former builds ``DEC_LAYERS - 1``), so there are
``dec_layers + 1`` predictions: index 0 from the learnable queries before any layer.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from freeseg.layers.mlp import MLP
from freeseg.layers.position_encoding import PositionEmbeddingSine
from freeseg.layers.wrappers import Conv2d, c2_xavier_fill
from freeseg.modeling.transformer_decoder.attention_layers import (
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
)
from freeseg.utils.errors import FreeSegError


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Learnable queries refined by masked cross-attention to 3 feature levels in turn.

    Args:
        in_channels: channels of the multi-scale features (projected if != hidden_dim).
        hidden_dim, num_queries, nheads, dim_feedforward, dec_layers, pre_norm: decoder sizes.
        mask_dim: channels of the mask features (output of the mask MLP).
        embedding_dim, embed_hidden_dim, embed_layers: the class MLP (FreeSeg: 256 -> 1024 -> 512).
        enforce_input_project: project the features even when in_channels == hidden_dim.
    """

    num_feature_levels = 3

    def __init__(
        self,
        in_channels: int,
        *,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        embedding_dim: int,
        embed_hidden_dim: int,
        embed_layers: int,
        enforce_input_project: bool = False,
    ) -> None:
        super().__init__()
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = MLP(hidden_dim, embed_hidden_dim, embedding_dim, embed_layers)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, x: list[torch.Tensor], mask_features: torch.Tensor) -> dict[str, Any]:
        """Decode.

        Args:
            x: 3 maps [B, C, H_l, W_l] (strides 32, 16, 8).
            mask_features: [B, mask_dim, H/4, W/4].
        Returns:
            {"pred_logits": class embeddings [B, Q, embedding_dim], "pred_masks": mask logits
            [B, Q, H/4, W/4], "aux_outputs": dec_layers dicts with the same keys, index 0 =
            prediction of the learnable queries before any layer}.
        """
        if len(x) != self.num_feature_levels:
            raise FreeSegError(f"masked-attention decoder takes {self.num_feature_levels} feature maps, got {len(x)}")
        src, pos, size_list = [], [], []
        for i in range(self.num_feature_levels):
            size_list.append(x[i].shape[-2:])
            pos.append(self.pe_layer(x[i]).flatten(2).permute(2, 0, 1))  # B C H W -> HW B C
            src.append(
                (self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1)
            )
        device_type = mask_features.device.type
        if torch.is_autocast_enabled(device_type):
            # the 10 mask products would each cast it (and a channels-last bf16 operand is 3x
            # slower than a contiguous one on CPU): once, contiguous, in the autocast dtype
            dtype = torch.get_autocast_dtype(device_type)
            mask_features = mask_features.to(dtype, memory_format=torch.contiguous_format)
        batch = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)  # Q B C
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)

        classes, masks = [], []
        cls, mask, blocked = self._prediction_heads(output, mask_features, size_list[0])
        classes.append(cls)
        masks.append(mask)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            output = self.transformer_cross_attention_layers[i](
                output, src[level], memory_mask=self._memory_mask(blocked), pos=pos[level], query_pos=query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            output = self.transformer_ffn_layers[i](output)
            cls, mask, blocked = self._prediction_heads(
                output, mask_features, size_list[(i + 1) % self.num_feature_levels]
            )
            classes.append(cls)
            masks.append(mask)
        return {
            "pred_logits": classes[-1],
            "pred_masks": masks[-1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1])],
        }

    def forward_prediction_heads(
        self, output: torch.Tensor, mask_features: torch.Tensor, attn_mask_target_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class embeddings [B, Q, E], mask logits [B, Q, H/4, W/4] and the next attention mask
        bool [B * heads, Q, h * w] (True = blocked: predicted probability < 0.5 at that level)."""
        outputs_class, outputs_mask, blocked = self._prediction_heads(output, mask_features, attn_mask_target_size)
        return outputs_class, outputs_mask, blocked.repeat_interleave(self.num_heads, dim=0)

    def _prediction_heads(
        self, output: torch.Tensor, mask_features: torch.Tensor, attn_mask_target_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`forward_prediction_heads`, with the attention mask once per image [B, Q, h * w]
        (the same for every head)."""
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # Q B C -> B Q C
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        blocked = F.interpolate(outputs_mask, size=attn_mask_target_size, mode="bilinear", align_corners=False)
        return outputs_class, outputs_mask, (blocked.sigmoid().flatten(2) < 0.5).detach()

    def _memory_mask(self, blocked: torch.Tensor) -> torch.Tensor:
        """The cross-attention mask from ``blocked`` [B, Q, h * w]: [Q, h * w] for one image (the
        attention broadcasts it over the heads, no per-head copy), else [B * heads, Q, h * w]."""
        # a query whose mask blocks every position would get NaNs: let it see everything
        # (an elementwise AND rather than an indexed write, which ONNX export mistranslates)
        blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
        return blocked[0] if blocked.shape[0] == 1 else blocked.repeat_interleave(self.num_heads, dim=0)


def build_transformer_decoder(cfg: Any, in_channels: int) -> MultiScaleMaskedTransformerDecoder:
    """Reads ``MODEL.MASK_FORMER.*`` and FreeSeg's ``MODEL.SEM_SEG_HEAD.EMBED*`` keys.

    ``DEC_LAYERS`` is used as is (FreeSeg), not minus one (Mask2Former).
    """
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name not in TRANSFORMER_DECODERS:
        raise FreeSegError(
            f"unknown MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME {name!r}; available: {', '.join(TRANSFORMER_DECODERS)}"
        )
    m, h = cfg.MODEL.MASK_FORMER, cfg.MODEL.SEM_SEG_HEAD
    if m.DEC_LAYERS < 1:
        raise FreeSegError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {m.DEC_LAYERS}")
    return TRANSFORMER_DECODERS[name](
        in_channels,
        hidden_dim=m.HIDDEN_DIM,
        num_queries=m.NUM_OBJECT_QUERIES,
        nheads=m.NHEADS,
        dim_feedforward=m.DIM_FEEDFORWARD,
        dec_layers=m.DEC_LAYERS,
        pre_norm=m.PRE_NORM,
        mask_dim=h.MASK_DIM,
        embedding_dim=h.EMBEDDING_DIM,
        embed_hidden_dim=h.EMBED_HIDDEN_DIM,
        embed_layers=h.EMBED_LAYERS,
        enforce_input_project=m.ENFORCE_INPUT_PROJ,
    )


TRANSFORMER_DECODERS: dict[str, type[MultiScaleMaskedTransformerDecoder]] = {
    "MultiScaleMaskedTransformerDecoder": MultiScaleMaskedTransformerDecoder,
}
