"""``MODEL.BACKBONE.NAME`` -> builder, and ``build_backbone(cfg)``."""
from __future__ import annotations

from typing import Any, Callable

from freeseg.layers.shape_spec import ShapeSpec
from freeseg.modeling.backbone.base import Backbone
from freeseg.modeling.backbone.resnet import build_resnet_backbone, build_resnet_deeplab_backbone
from freeseg.modeling.backbone.timm_backbone import build_swin_backbone, build_timm_backbone
from freeseg.utils.errors import FreeSegError, closest

# Names as they appear in detectron2 / Mask2Former / FreeSeg configs.
BACKBONES: dict[str, Callable[[Any, ShapeSpec], Backbone]] = {
    "build_resnet_backbone": build_resnet_backbone,
    "build_resnet_deeplab_backbone": build_resnet_deeplab_backbone,
    "D2SwinTransformer": build_swin_backbone,
    "build_timm_backbone": build_timm_backbone,
}


def build_backbone(cfg: Any, input_shape: ShapeSpec | None = None) -> Backbone:
    """The backbone named by ``cfg.MODEL.BACKBONE.NAME`` (input channels from ``MODEL.PIXEL_MEAN``)."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONES:
        hint = closest(name, BACKBONES)
        raise FreeSegError(
            f"unknown MODEL.BACKBONE.NAME {name!r}"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + f"; available: {', '.join(BACKBONES)}"
        )
    backbone = BACKBONES[name](cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise FreeSegError(f"backbone builder {name!r} returned {type(backbone).__name__}, not a Backbone")
    return backbone
