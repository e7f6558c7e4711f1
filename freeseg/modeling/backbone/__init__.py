"""Backbones: detectron2-named ResNets and timm models, plus checkpoint-name conversion."""
from freeseg.modeling.backbone.base import Backbone
from freeseg.modeling.backbone.build import BACKBONES, build_backbone
from freeseg.modeling.backbone.resnet import (
    ResNet,
    build_resnet_backbone,
    build_resnet_deeplab_backbone,
    make_resnet_stages,
)
from freeseg.modeling.backbone.timm_backbone import TimmBackbone, build_swin_backbone, build_timm_backbone
from freeseg.modeling.backbone.weights import convert_to_d2_backbone, load_state_dict_strict

__all__ = [
    "BACKBONES",
    "Backbone",
    "ResNet",
    "TimmBackbone",
    "build_backbone",
    "build_resnet_backbone",
    "build_resnet_deeplab_backbone",
    "build_swin_backbone",
    "build_timm_backbone",
    "convert_to_d2_backbone",
    "load_state_dict_strict",
    "make_resnet_stages",
]
