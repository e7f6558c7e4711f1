"""Any timm model with ``features_only`` support as a res2..res5 backbone (Swin, ConvNeXt, ...).

We use timm's own feature extraction rather than re-implementing Swin/ConvNeXt: timm keeps
those models correct and fast. Stages are named by their stride (4 -> res2 ... 32 -> res5), so
the pixel decoder sees the same names as with a ResNet.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from freeseg.layers.shape_spec import ShapeSpec
from freeseg.modeling.backbone.base import Backbone
from freeseg.utils.errors import FreeSegError

STRIDE_TO_NAME = {4: "res2", 8: "res3", 16: "res4", 32: "res5"}


class TimmBackbone(Backbone):
    """Wraps ``timm.create_model(name, features_only=True, ...)``.

    Args:
        model_name: a timm model name (``timm.list_models()``).
        out_features: which of res2..res5 to return.
        model_kwargs: extra keyword arguments for ``timm.create_model`` (sizes, drop-path, ...).
            Weights are never downloaded (``pretrained=False``); load a local checkpoint through
            the engine instead.
        out_norms: a LayerNorm on every returned map, named ``norm{i}`` for res{i + 2}, as
            Mask2Former's D2SwinTransformer has.
    Output: {name: [B, C, H / stride, W / stride]} (NCHW even where timm returns NHWC).
    """

    def __init__(
        self,
        model_name: str,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        model_kwargs: dict[str, Any] | None = None,
        out_norms: bool = False,
    ) -> None:
        super().__init__()
        import timm

        try:
            self.model = timm.create_model(model_name, pretrained=False, features_only=True, **(model_kwargs or {}))
        except RuntimeError as err:  # timm raises RuntimeError for unknown names / no feature support
            raise FreeSegError(f"timm backbone {model_name!r} cannot be built with features_only: {err}") from err
        info = self.model.feature_info
        names = [STRIDE_TO_NAME.get(r) for r in info.reduction()]
        self._index = {n: i for i, n in enumerate(names) if n is not None}
        missing = [f for f in out_features if f not in self._index]
        if missing:
            raise FreeSegError(
                f"timm model {model_name!r} has no feature maps {missing} (its strides: {info.reduction()}); "
                f"choose OUT_FEATURES among {sorted(self._index)}"
            )
        self._out_features = list(out_features)
        self._out_feature_channels = {n: info.channels()[i] for n, i in self._index.items()}
        self._out_feature_strides = {n: info.reduction()[i] for n, i in self._index.items()}
        self._nhwc = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        self._norms = {}
        if out_norms:
            for name in self._out_features:
                norm_name = f"norm{int(name[3:]) - 2}"
                self.add_module(norm_name, torch.nn.LayerNorm(self._out_feature_channels[name]))
                self._norms[name] = norm_name

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, 3, H, W] -> {name: [B, C, H / stride, W / stride]}."""
        feats = self.model(x)
        out = {}
        for name in self._out_features:
            f = feats[self._index[name]]
            if name in self._norms:  # LayerNorm over channels, which are last in NHWC
                norm = getattr(self, self._norms[name])
                f = norm(f) if self._nhwc else norm(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            out[name] = f.permute(0, 3, 1, 2).contiguous() if self._nhwc else f  # B H W C -> B C H W
        return out


def build_timm_backbone(cfg: Any, input_shape: ShapeSpec | None = None) -> TimmBackbone:
    """Generic timm backbone: ``MODEL.TIMM.NAME`` (+ ``MODEL.TIMM.DROP_PATH_RATE``)."""
    timm_cfg = cfg.MODEL.TIMM
    name = timm_cfg.NAME
    if not name:
        raise FreeSegError("MODEL.BACKBONE.NAME is build_timm_backbone but MODEL.TIMM.NAME is empty; set a timm model name")
    kwargs: dict[str, Any] = {}
    drop_path = timm_cfg.DROP_PATH_RATE
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    out_features = tuple(timm_cfg.OUT_FEATURES)
    return TimmBackbone(name, out_features=out_features, model_kwargs=kwargs)


def build_swin_backbone(cfg: Any, input_shape: ShapeSpec | None = None) -> TimmBackbone:
    """Mask2Former's ``D2SwinTransformer`` from the ``MODEL.SWIN.*`` keys, built with timm's Swin.

    Output LayerNorms ``norm0..norm3`` as in D2SwinTransformer. Deliberate differences: timm's
    Swin has no absolute position embedding (``APE`` must be False, as in every
    Mask2Former/FreeSeg config) and ignores ``QK_SCALE``. Original / D2 Swin checkpoints
    (``layers.0.downsample``, ``norm0``) convert with ``weights.convert_to_d2_backbone``.
    """
    s = cfg.MODEL.SWIN
    if s.APE:
        raise FreeSegError("MODEL.SWIN.APE=True is not supported by the timm Swin; set it to False")
    kwargs = dict(
        img_size=s.PRETRAIN_IMG_SIZE,
        patch_size=s.PATCH_SIZE,
        embed_dim=s.EMBED_DIM,
        depths=tuple(s.DEPTHS),
        num_heads=tuple(s.NUM_HEADS),
        window_size=s.WINDOW_SIZE,
        mlp_ratio=s.MLP_RATIO,
        qkv_bias=s.QKV_BIAS,
        drop_rate=s.DROP_RATE,
        attn_drop_rate=s.ATTN_DROP_RATE,
        drop_path_rate=s.DROP_PATH_RATE,
        strict_img_size=False,
        dynamic_img_size=True,
    )
    if not s.PATCH_NORM:
        raise FreeSegError("MODEL.SWIN.PATCH_NORM=False is not supported by the timm Swin; set it to True")
    return TimmBackbone(
        "swin_base_patch4_window7_224", out_features=list(s.OUT_FEATURES), model_kwargs=kwargs, out_norms=True
    )
