"""Checkpoint conversion (Caffe2 / detectron2 / torchvision / timm ResNets) and strict loading."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from freeseg.modeling.backbone import ResNet, convert_to_d2_backbone, load_state_dict_strict, make_resnet_stages
from freeseg.modeling.backbone.resnet_blocks import BasicStem, DeepLabStem
from freeseg.utils.errors import FreeSegError


def _tiny_r50(stem: type = BasicStem, stem_out: int = 16, norm: str = "FrozenBN") -> ResNet:
    stages = make_resnet_stages(depth=50, in_channels=stem_out, res2_out_channels=32, width_per_group=8,
                                stride_in_1x1=True, norm=norm)
    return ResNet(stem(3, stem_out, norm=norm), stages).eval()


def _randomize(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.rand(v.shape, generator=g) + 0.5 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return state


def _caffe2_blob(name: str) -> str:
    """detectron2 name -> MSRA Caffe2 blob name, spelled out independently of the converter."""
    suffix = {"weight": "w", "bias": "b"}
    m = re.match(r"^stem\.conv1\.(norm\.)?(\w+)$", name)
    if m:
        return ("res_conv1_bn_" + {"weight": "s", "bias": "b"}[m.group(2)]) if m.group(1) else "conv1_w"
    m = re.match(r"^res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)\.(norm\.)?(\w+)$", name)
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[m.group(3)]
    tail = ("bn_" + {"weight": "s", "bias": "b"}[m.group(5)]) if m.group(4) else suffix[m.group(5)]
    return f"res{m.group(1)}_{m.group(2)}_{branch}_{tail}"


def test_caffe2_pickle_names() -> None:
    model = _tiny_r50()
    state = _randomize(model)
    blobs = {_caffe2_blob(k): v.numpy() for k, v in state.items() if not k.endswith(("running_mean", "running_var"))}
    blobs["fc1000_w"] = np.zeros((1000, 256), np.float32)
    blobs["fc1000_b"] = np.zeros((1000,), np.float32)
    assert "res2_0_branch2a_bn_s" in blobs and "res_conv1_bn_b" in blobs
    converted = convert_to_d2_backbone({"blobs": blobs, "__author__": "MSRA"})
    fresh = _tiny_r50()
    load_state_dict_strict(fresh, converted)
    for k, v in state.items():
        if k.endswith("running_mean"):
            assert torch.equal(converted[k], torch.zeros_like(v))  # Caffe2 FrozenBN: mean 0, var 1
        elif k.endswith("running_var"):
            assert torch.equal(converted[k], torch.ones_like(v))
        else:
            assert torch.equal(converted[k], v), k


def test_detectron2_named_pickle_with_numpy_and_prefix() -> None:
    model = _tiny_r50(stem=DeepLabStem, stem_out=32)
    state = _randomize(model)
    pickle = {"model": {"backbone." + k: v.numpy() for k, v in state.items()}, "__author__": "detectron2"}
    converted = convert_to_d2_backbone(pickle)
    assert set(converted) == set(state) and all(torch.equal(converted[k], state[k]) for k in state)
    plain = convert_to_d2_backbone({k: v.numpy() for k, v in state.items()})
    assert set(plain) == set(state)


def test_torchvision_resnet_converts_and_computes_the_same() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(width_per_group=16).eval()  # bottleneck 16 * 64/64 wide, real layout
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.running_mean, std=0.1)
    converted = convert_to_d2_backbone(tv.state_dict())
    assert not any(k.startswith("fc") or k.endswith("num_batches_tracked") for k in converted)
    ours = ResNet(BasicStem(3, 64, norm="FrozenBN"), make_resnet_stages(
        depth=50, in_channels=64, res2_out_channels=256, width_per_group=16, stride_in_1x1=False, norm="FrozenBN")).eval()
    load_state_dict_strict(ours, converted)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        torch.testing.assert_close(ours(x)["res5"], ref, atol=1e-4, rtol=1e-4)


def test_timm_resnet_and_deep_stem() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", stem_type="deep", stem_width=32, pretrained=False).eval()
    converted = convert_to_d2_backbone(net.state_dict())
    assert "stem.conv3.norm.running_var" in converted and "stem.conv2.weight" in converted
    ours = ResNet(DeepLabStem(3, 64, norm="FrozenBN"),
                  make_resnet_stages(depth=18, in_channels=64, res2_out_channels=64, norm="FrozenBN")).eval()
    load_state_dict_strict(ours, converted)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["res5"], net.forward_features(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(FreeSegError, match="ResNet-D"):
        convert_to_d2_backbone(timm.create_model("resnet18d", pretrained=False).state_dict())


def test_unknown_layout_and_strict_errors() -> None:
    with pytest.raises(FreeSegError, match="layout not recognised.*blocks.0"):
        convert_to_d2_backbone({"blocks.0.weight": torch.zeros(1)})
    model = _tiny_r50()
    state = dict(model.state_dict())
    state["res2.0.conv1.weight"] = torch.zeros(9, 16, 1, 1)
    del state["res5.2.conv3.weight"]
    state["res6.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(FreeSegError) as err:
        load_state_dict_strict(model, state, what="R-50.pkl")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("R-50.pkl does not match ResNet")
    assert "missing: res5.2.conv3.weight" in msg and "unexpected: res6.0.conv1.weight" in msg
    assert "res2.0.conv1.weight (9, 16, 1, 1) vs model (8, 16, 1, 1)" in msg


def test_original_swin_checkpoint_converts_to_timm_swin_backbone() -> None:
    from freeseg.config import get_cfg
    from freeseg.modeling.backbone import build_backbone

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    s = cfg.MODEL.SWIN
    s.EMBED_DIM, s.DEPTHS, s.NUM_HEADS, s.WINDOW_SIZE = 16, [1, 1, 2, 1], [1, 1, 2, 2], 4
    model = build_backbone(cfg).eval()
    state = _randomize(model)
    original = {}
    for k, v in state.items():  # our names -> original Swin / D2SwinTransformer names, by hand
        m = re.match(r"^model\.layers_(\d+)\.downsample\.(.*)$", k)
        if m:
            name = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        else:
            name = re.sub(r"^layers_(\d+)\.", r"layers.\1.", k[len("model."):]) if k.startswith("model.") else k
        original["backbone." + name] = v
    assert "backbone.layers.0.downsample.reduction.weight" in original and "backbone.norm3.weight" in original
    original["backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    original["head.weight"] = torch.zeros(1000, 128)
    original["norm.weight"] = torch.zeros(128)
    converted = convert_to_d2_backbone({"model": original})
    fresh = build_backbone(cfg).eval()
    load_state_dict_strict(fresh, converted)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)["res4"], model(x)["res4"])
