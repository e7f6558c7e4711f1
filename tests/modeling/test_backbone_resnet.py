"""ResNet / timm backbones: shapes, strides, detectron2 names, dilation, freezing, builders."""
from __future__ import annotations

import pytest
import torch

from freeseg.config import get_cfg
from freeseg.layers import FrozenBatchNorm2d
from freeseg.modeling.backbone import BACKBONES, ResNet, TimmBackbone, build_backbone, make_resnet_stages
from freeseg.modeling.backbone.resnet_blocks import BasicStem, DeepLabStem
from freeseg.utils.errors import FreeSegError


def _tiny_cfg(**resnets):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    r = cfg.MODEL.RESNETS
    r.DEPTH, r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.WIDTH_PER_GROUP = 50, 16, 32, 8
    r.NORM, r.STRIDE_IN_1X1, r.STEM_TYPE = "FrozenBN", False, "basic"
    r.RES5_MULTI_GRID = [1, 1, 1]
    r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    for k, v in resnets.items():
        setattr(r, k, v)
    return cfg


def test_resnet50_shapes_and_detectron2_names() -> None:
    model = build_backbone(_tiny_cfg()).eval()
    shapes = model.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (32, 4), "res3": (64, 8), "res4": (128, 16), "res5": (256, 32)
    }
    out = model(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 32, 16, 24), "res3": (1, 64, 8, 12), "res4": (1, 128, 4, 6), "res5": (1, 256, 2, 3)
    }
    keys = set(model.state_dict())
    for k in ("stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.weight",
              "res3.3.conv3.norm.bias", "res4.5.conv2.weight", "res5.2.conv1.norm.running_mean"):
        assert k in keys
    assert "res2.1.shortcut.weight" not in keys and "res4.6.conv1.weight" not in keys
    # STRIDE_IN_1X1 False (torchvision style): the 3x3 conv strides
    assert model.res3[0].conv1.stride == (1, 1) and model.res3[0].conv2.stride == (2, 2)


def test_stride_in_1x1_groups_and_depths() -> None:
    msra = build_backbone(_tiny_cfg(STRIDE_IN_1X1=True, NUM_GROUPS=2, WIDTH_PER_GROUP=4))
    assert msra.res3[0].conv1.stride == (2, 2) and msra.res3[0].conv2.stride == (1, 1)
    assert msra.res2[0].conv2.groups == 2 and msra.res2[0].conv2.out_channels == 8
    r101 = build_backbone(_tiny_cfg(DEPTH=101))
    assert len(r101.res4) == 23
    r18 = build_backbone(_tiny_cfg(DEPTH=18, RES2_OUT_CHANNELS=64))
    assert {k: v.channels for k, v in r18.output_shape().items()} == {"res2": 64, "res3": 128, "res4": 256, "res5": 512}
    assert "res2.0.conv3.weight" not in r18.state_dict() and "res3.0.shortcut.weight" in r18.state_dict()
    with pytest.raises(FreeSegError, match="RES2_OUT_CHANNELS 64"):
        build_backbone(_tiny_cfg(DEPTH=34))
    with pytest.raises(FreeSegError, match="DEPTH 77"):
        build_backbone(_tiny_cfg(DEPTH=77))


def test_deeplab_stem_and_multi_grid_keep_stride() -> None:
    cfg = _tiny_cfg(STEM_TYPE="deeplab", STEM_OUT_CHANNELS=32, RES5_MULTI_GRID=[1, 2, 4])
    cfg.MODEL.BACKBONE.NAME = "build_resnet_deeplab_backbone"
    model = build_backbone(cfg)
    assert isinstance(model.stem, DeepLabStem)
    assert [tuple(model.stem.state_dict()[f"conv{i}.weight"].shape) for i in (1, 2, 3)] == [
        (16, 3, 3, 3), (16, 16, 3, 3), (32, 16, 3, 3)
    ]
    assert [b.conv2.dilation for b in model.res5] == [(1, 1), (2, 2), (4, 4)]
    assert model.output_shape()["res5"].stride == 32
    assert model(torch.randn(1, 3, 64, 64))["res5"].shape[-2:] == (2, 2)
    cfg.MODEL.RESNETS.RES5_DILATION = 2
    dilated = build_backbone(cfg)
    assert dilated.output_shape()["res5"].stride == 16
    assert [b.conv2.dilation for b in dilated.res5] == [(2, 2), (4, 4), (8, 8)]
    assert dilated(torch.randn(1, 3, 64, 64))["res5"].shape[-2:] == (4, 4)
    # the basic builder ignores STEM_TYPE, as detectron2's does
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.RES5_DILATION = 1
    assert isinstance(build_backbone(cfg).stem, BasicStem)


def test_freeze_at_and_out_features() -> None:
    model = build_backbone(_tiny_cfg(NORM="BN", OUT_FEATURES=["res2", "res3"]))
    assert not hasattr(model, "res4") and set(model(torch.randn(1, 3, 32, 32))) == {"res2", "res3"}
    cfg = _tiny_cfg(NORM="BN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    frozen = build_backbone(cfg)
    assert all(not p.requires_grad for p in frozen.stem.parameters())
    assert all(not p.requires_grad for p in frozen.res2.parameters())
    assert all(p.requires_grad for p in frozen.res3.parameters())
    assert isinstance(frozen.res2[0].conv1.norm, FrozenBatchNorm2d)
    assert isinstance(frozen.res3[0].conv1.norm, torch.nn.BatchNorm2d)
    with pytest.raises(FreeSegError, match="OUT_FEATURES"):
        ResNet(BasicStem(3, 16), make_resnet_stages(depth=50, in_channels=16, res2_out_channels=32,
                                                     width_per_group=8), out_features=["res6"])


def test_unknown_backbone_lists_available() -> None:
    cfg = _tiny_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbon"
    with pytest.raises(FreeSegError, match="did you mean 'build_resnet_backbone'.*D2SwinTransformer"):
        build_backbone(cfg)
    assert {"build_resnet_backbone", "build_resnet_deeplab_backbone", "D2SwinTransformer"} <= set(BACKBONES)


def test_swin_from_d2_config_keys() -> None:
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    s = cfg.MODEL.SWIN
    s.EMBED_DIM, s.DEPTHS, s.NUM_HEADS, s.WINDOW_SIZE = 16, [1, 1, 1, 1], [1, 1, 2, 2], 4
    model = build_backbone(cfg).eval()
    assert isinstance(model, TimmBackbone)
    assert {k: (v.channels, v.stride) for k, v in model.output_shape().items()} == {
        "res2": (16, 4), "res3": (32, 8), "res4": (64, 16), "res5": (128, 32)
    }
    out = model(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 16, 16, 24), "res3": (1, 32, 8, 12), "res4": (1, 64, 4, 6), "res5": (1, 128, 2, 3)
    }
    with torch.no_grad():  # D2SwinTransformer's output LayerNorms norm0..norm3 are applied
        model.norm1.weight.zero_()
        model.norm1.bias.fill_(0.25)
    assert torch.equal(model(torch.randn(1, 3, 64, 96))["res3"], torch.full((1, 32, 8, 12), 0.25))
    s.APE = True
    with pytest.raises(FreeSegError, match="APE"):
        build_backbone(cfg)


def test_generic_timm_backbone() -> None:
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_timm_backbone"
    with pytest.raises(FreeSegError, match="MODEL.TIMM.NAME is empty"):
        build_backbone(cfg)
    cfg.merge_from_list(["MODEL.TIMM.NAME", "resnet18", "MODEL.TIMM.OUT_FEATURES", "['res3', 'res5']"])
    model = build_backbone(cfg)
    assert {k: (v.channels, v.stride) for k, v in model.output_shape().items()} == {"res3": (128, 8), "res5": (512, 32)}
    out = model(torch.randn(1, 3, 64, 64))
    assert tuple(out["res5"].shape) == (1, 512, 2, 2)
    with pytest.raises(FreeSegError, match="no feature maps"):
        TimmBackbone("resnet18", out_features=["res6"])
    with pytest.raises(FreeSegError, match="features_only"):
        TimmBackbone("no_such_model_xyz")
