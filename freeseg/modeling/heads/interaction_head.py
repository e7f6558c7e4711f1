"""``MaskFormerInteractionHead`` = pixel decoder + ContextInteraction + masked-attention decoder.

Split in two so that an image is encoded once and decoded once per task / vocabulary:
``encode(features)`` runs the pixel decoder (no text), ``decode(encoded, text_features)`` runs
the text-conditioned part. ``forward`` does both.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from freeseg.layers.shape_spec import ShapeSpec
from freeseg.modeling.heads.interaction import ContextInteraction
from freeseg.modeling.pixel_decoder import build_pixel_decoder
from freeseg.modeling.transformer_decoder import build_transformer_decoder
from freeseg.utils.errors import FreeSegError


class MaskFormerInteractionHead(nn.Module):
    """FreeSeg's segmentation head (checkpoint prefixes ``pixel_decoder``, ``interaction``,
    ``predictor``).

    Args:
        pixel_decoder: features dict -> (mask_features, encoder_features, 3 multi-scale maps).
        interaction: conditions the maps on the text features.
        predictor: masked-attention decoder on (multi-scale maps, mask features).
    """

    def __init__(self, pixel_decoder: nn.Module, interaction: ContextInteraction, predictor: nn.Module) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.interaction = interaction
        self.predictor = predictor

    def encode(self, features: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Text-independent part.

        Args:
            features: backbone maps {name: [B, C, H / stride, W / stride]}.
        Returns:
            {"mask_features": [B, M, H/4, W/4], "transformer_encoder_features": [B, C, H/32, W/32],
            "multi_scale_features": 3 maps [B, C, ...] at strides 32, 16, 8}.
        """
        mask_features, encoder_features, multi_scale = self.pixel_decoder.forward_features(features)
        return {
            "mask_features": mask_features,
            "transformer_encoder_features": encoder_features,
            "multi_scale_features": multi_scale,
        }

    def decode(self, encoded: dict[str, Any], text_features: torch.Tensor) -> dict[str, Any]:
        """Text-conditioned part.

        Args:
            encoded: output of ``encode`` (not modified).
            text_features: [K+1, D] normalised class embeddings, void last (or [B, K+1, D]).
        Returns:
            {"pred_logits": class embeddings [B, Q, D] (raw; logits = 100 · normalize(e) @ T.T
            are computed by the meta-architecture), "pred_masks": [B, Q, H/4, W/4],
            "aux_outputs": [{"pred_logits", "pred_masks"}] * DEC_LAYERS}.
        """
        if text_features.dim() not in (2, 3):
            raise FreeSegError(f"text_features must be [K+1, D] or [B, K+1, D], got {tuple(text_features.shape)}")
        multi_scale, mask_features = self.interaction(
            encoded["multi_scale_features"], encoded["mask_features"], text_features
        )
        return self.predictor(multi_scale, mask_features)

    def forward(self, features: dict[str, torch.Tensor], text_features: torch.Tensor) -> dict[str, Any]:
        """``decode(encode(features), text_features)``; see those for shapes."""
        return self.decode(self.encode(features), text_features)


def build_interaction_head(cfg: Any, input_shape: dict[str, ShapeSpec]) -> MaskFormerInteractionHead:
    """FreeSeg's head from ``MODEL.SEM_SEG_HEAD`` / ``MODEL.MASK_FORMER`` /
    ``MODEL.CLIP_ADAPTER.PROMPT_DIM`` (the text width the interaction attends to)."""
    h = cfg.MODEL.SEM_SEG_HEAD
    if cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE != "multi_scale_pixel_decoder":
        raise FreeSegError(
            "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE must be 'multi_scale_pixel_decoder' for MaskFormerInteractionHead"
        )
    interaction = ContextInteraction(
        q_dim=h.EMB_SIZE,
        k_dim=cfg.MODEL.CLIP_ADAPTER.PROMPT_DIM,
        embed_dim=h.EMBED_DIM,
        num_heads=h.NUM_HEADS,
        use_layer_scale=h.USE_LAYER_SCALE,
        dropout=h.INTERACTION_DROPOUT,
    )
    return MaskFormerInteractionHead(
        pixel_decoder=build_pixel_decoder(cfg, input_shape),
        interaction=interaction,
        predictor=build_transformer_decoder(cfg, h.CONVS_DIM),
    )


SEM_SEG_HEADS: dict[str, Callable[[Any, dict[str, ShapeSpec]], nn.Module]] = {
    "MaskFormerInteractionHead": build_interaction_head,
}


def build_sem_seg_head(cfg: Any, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """The head named by ``MODEL.SEM_SEG_HEAD.NAME``, on the backbone's ``output_shape()``."""
    name = cfg.MODEL.SEM_SEG_HEAD.NAME
    if name not in SEM_SEG_HEADS:
        raise FreeSegError(f"unknown MODEL.SEM_SEG_HEAD.NAME {name!r}; available: {', '.join(SEM_SEG_HEADS)}")
    return SEM_SEG_HEADS[name](cfg, input_shape)
