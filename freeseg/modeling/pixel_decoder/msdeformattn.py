"""Mask2Former's ``MSDeformAttnPixelDecoder``: deformable encoder on res3-res5 + FPN on res2."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freeseg.layers.batch_norm import get_norm
from freeseg.layers.ms_deform_attn import IMPLS
from freeseg.layers.position_encoding import PositionEmbeddingSine
from freeseg.layers.shape_spec import ShapeSpec
from freeseg.layers.wrappers import Conv2d, c2_xavier_fill
from freeseg.modeling.pixel_decoder.encoder import MSDeformAttnTransformerEncoderOnly
from freeseg.utils.errors import FreeSegError


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder: per-pixel embeddings and the multi-scale memory of the transformer decoder.

    The ``transformer_in_features`` (res3-res5) are projected to ``conv_dim`` (1x1 conv +
    GN(32)), encoded by the deformable encoder, then finer input levels (res2) are added FPN
    style (lateral 1x1 conv + bilinear upsampling of the coarser output, 3x3 conv + ReLU).

    Args:
        input_shape: {name: ShapeSpec(channels, stride)} of the backbone features to use.
        transformer_dropout, transformer_nheads, transformer_dim_feedforward,
        transformer_enc_layers, transformer_n_points: deformable encoder sizes.
        conv_dim: width of every decoder map.
        mask_dim: channels of the mask features.
        norm: norm of the FPN convs ("GN" in every config).
        transformer_in_features: names encoded by the transformer.
        common_stride: stride of the mask features (4).
        deformable_impl: kernel choice of the deformable attention.

    Attributes:
        low_precision_inference: False (default, as upstream): fp32 even under autocast. True
            (set by the model for ``TEST.AMP``): in eval mode the caller's autocast applies here
            too; training stays fp32.
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: str | Callable[[int], nn.Module] | None,
        transformer_in_features: Sequence[str],
        common_stride: int,
        transformer_n_points: int = 4,
        deformable_impl: str = "auto",
    ) -> None:
        super().__init__()
        self.low_precision_inference = False
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise FreeSegError(
                f"pixel decoder needs backbone features {missing}; the backbone gives {sorted(input_shape)}"
            )
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)  # fine to coarse
        self.in_features = [k for k, _ in ordered]
        self.feature_strides = [v.stride for _, v in ordered]
        self.feature_channels = [v.channels for _, v in ordered]
        tr_shape = sorted(((k, v) for k, v in input_shape.items() if k in transformer_in_features),
                          key=lambda kv: kv[1].stride)
        self.transformer_in_features = [k for k, _ in tr_shape]
        tr_channels = [v.channels for _, v in tr_shape]
        self.transformer_feature_strides = [v.stride for _, v in tr_shape]
        self.transformer_num_feature_levels = len(self.transformer_in_features)

        # coarse to fine, like the encoder's level order; GroupNorm(32) is hard-coded upstream
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in tr_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
            impl=deformable_impl,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = 3  # always 3 levels for the masked-attention decoder
        self.common_stride = common_stride

        stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = int(np.log2(stride) - np.log2(self.common_stride))
        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(self.feature_channels[: self.num_fpn_levels]):
            lateral = Conv2d(in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim))
            output = Conv2d(conv_dim, conv_dim, kernel_size=3, stride=1, padding=1, bias=use_bias,
                            norm=get_norm(norm, conv_dim), activation=F.relu)
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            # checkpoint names: adapter_1 / layer_1 for the finest level
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # coarse to fine, kept as plain lists so the modules are registered once (by name above)
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    def forward_features(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Decode backbone features.

        Args:
            features: {name: [B, C_name, H / stride, W / stride]} (res2..res5).
        Returns:
            mask_features [B, mask_dim, H/4, W/4]; transformer_encoder_features [B, conv_dim,
            H/32, W/32] (the coarsest encoded level); multi_scale_features: 3 maps
            [B, conv_dim, ...] at strides 32, 16, 8.
        """
        if self.low_precision_inference and not self.training:
            return self._forward_impl(features)  # under the caller's autocast (TEST.AMP)
        device_type = next(iter(features.values())).device.type
        # fp32 throughout, as upstream (@autocast(enabled=False)): the deformable sampling and
        # the encoder's LayerNorms are unstable in half precision under mixed-precision training
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_impl(features)

    def _forward_impl(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):  # coarse to fine
            x = features[name].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        memory, _, _ = self.transformer(srcs, pos)
        batch = memory.shape[0]
        shapes = [(s.shape[-2], s.shape[-1]) for s in srcs]  # sizes, not tensor values (export)
        out = [
            z.transpose(1, 2).reshape(batch, -1, h, w)  # B HW C -> B C H W
            for z, (h, w) in zip(torch.split(memory, [h * w for h, w in shapes], dim=1), shapes)
        ]
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            x = features[name].float()
            cur = self.lateral_convs[idx](x)
            y = cur + F.interpolate(out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)
            out.append(self.output_convs[idx](y))
        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Same as ``forward_features``."""
        return self.forward_features(features)


def build_msdeformattn_pixel_decoder(cfg: Any, input_shape: dict[str, ShapeSpec]) -> MSDeformAttnPixelDecoder:
    """Reads Mask2Former's keys. As upstream, the encoder's dropout and heads come from
    ``MODEL.MASK_FORMER.{DROPOUT,NHEADS}``; its FFN width is 1024 unless
    ``MODEL.SEM_SEG_HEAD.TRANSFORMER_DIM_FEEDFORWARD`` says otherwise. Upstream ignores
    ``DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS`` / ``_N_HEADS`` and uses 4 points, so do we
    (released weights have exactly that shape)."""
    head = cfg.MODEL.SEM_SEG_HEAD
    absent = [f for f in head.IN_FEATURES if f not in input_shape]
    if absent:
        raise FreeSegError(
            f"MODEL.SEM_SEG_HEAD.IN_FEATURES {absent} are not produced by the backbone (it gives "
            f"{sorted(input_shape)}); set IN_FEATURES / MODEL.RESNETS.OUT_FEATURES to match"
        )
    impl = str(getattr(head, "DEFORMABLE_IMPL", "auto"))
    device = str(cfg.MODEL.DEVICE).split(":")[0]
    if impl not in IMPLS or (impl in ("cpu", "cuda") and impl != device):
        raise FreeSegError(
            f"MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL {impl!r} "
            + (f"does not run on MODEL.DEVICE {cfg.MODEL.DEVICE}" if impl in IMPLS else "is unknown")
            + f"; use one of {', '.join(IMPLS)} ('auto': the compiled kernel of the device, else PyTorch)"
        )
    return MSDeformAttnPixelDecoder(
        {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
        transformer_dropout=cfg.MODEL.MASK_FORMER.DROPOUT,
        transformer_nheads=cfg.MODEL.MASK_FORMER.NHEADS,
        transformer_dim_feedforward=head.TRANSFORMER_DIM_FEEDFORWARD,
        transformer_enc_layers=head.TRANSFORMER_ENC_LAYERS,
        conv_dim=head.CONVS_DIM,
        mask_dim=head.MASK_DIM,
        norm=head.NORM,
        transformer_in_features=list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
        common_stride=head.COMMON_STRIDE,
        transformer_n_points=4,
        deformable_impl=impl,
    )


PIXEL_DECODERS: dict[str, Callable[[Any, dict[str, ShapeSpec]], nn.Module]] = {
    "MSDeformAttnPixelDecoder": build_msdeformattn_pixel_decoder,
}


def build_pixel_decoder(cfg: Any, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """The pixel decoder named by ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name not in PIXEL_DECODERS:
        raise FreeSegError(
            f"unknown MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME {name!r}; available: {', '.join(PIXEL_DECODERS)}"
        )
    return PIXEL_DECODERS[name](cfg, input_shape)
