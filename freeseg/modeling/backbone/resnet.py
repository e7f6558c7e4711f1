"""detectron2-compatible ResNets (R-18 ... R-152, ResNeXt, DeepLab R101c) and their builders.

Module names follow detectron2 exactly (``stem.conv1``, ``res2.0.conv1.norm``, ...), so
FreeSeg / Mask2Former checkpoints and detectron2 model-zoo weights (after
``weights.convert_to_d2_backbone``) load without renaming.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from freeseg.layers.shape_spec import ShapeSpec
from freeseg.modeling.backbone.base import Backbone
from freeseg.modeling.backbone.resnet_blocks import (
    STEMS,
    BasicBlock,
    BottleneckBlock,
    CNNBlockBase,
)
from freeseg.utils.errors import FreeSegError

BLOCKS_PER_STAGE: dict[int, list[int]] = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}
STAGE_NAMES = ("res2", "res3", "res4", "res5")


class ResNet(Backbone):
    """A stem followed by up to four stages ``res2`` ... ``res5``.

    Args:
        stem: a module with ``out_channels`` and ``stride`` (total stride of the stem).
        stages: the blocks of each stage, in order; stage i is named ``res{i + 2}``.
        out_features: names to return, from "stem", "res2" ... "res5". Stages after the last
            requested one are not built.
        freeze_at: 0 = train everything; 1 = freeze the stem; k >= 2 = also freeze res2..res{k}
            (parameters frozen and their BatchNorms made FrozenBatchNorm2d).
    """

    def __init__(
        self,
        stem: CNNBlockBase,
        stages: Sequence[Sequence[CNNBlockBase]],
        out_features: Sequence[str] = STAGE_NAMES,
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        unknown = [f for f in out_features if f not in ("stem",) + STAGE_NAMES[: len(stages)]]
        if unknown:
            raise FreeSegError(
                f"ResNet OUT_FEATURES {unknown} not available; choose from stem, {', '.join(STAGE_NAMES[: len(stages)])}"
            )
        self.stem = stem
        current_stride = stem.stride
        self._out_feature_strides = {"stem": current_stride}
        self._out_feature_channels = {"stem": stem.out_channels}
        last = max(["stem", *STAGE_NAMES].index(f) for f in out_features)
        self.stage_names: list[str] = []
        for i, blocks in enumerate(stages[:last]):
            name = STAGE_NAMES[i]
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            for block in blocks:
                current_stride *= block.stride
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = blocks[-1].out_channels
        self._out_features = list(out_features)
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int = 0) -> "ResNet":
        """Freeze the stem (freeze_at >= 1) and stages res2..res{freeze_at}; see the class doc."""
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, name in enumerate(self.stage_names, start=2):
            if freeze_at >= idx:
                for block in getattr(self, name):
                    block.freeze()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, C, H, W] -> {name: [B, C_name, H / stride, W / stride]} for ``out_features``."""
        if x.dim() != 4:
            raise FreeSegError(f"ResNet takes [B, C, H, W] images, got shape {tuple(x.shape)}")
        outputs: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


def make_resnet_stages(
    *,
    depth: int,
    in_channels: int,
    res2_out_channels: int = 256,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = True,
    norm: str = "BN",
    res4_dilation: int = 1,
    res5_dilation: int = 1,
    res5_multi_grid: Sequence[int] = (1, 1, 1),
) -> list[list[CNNBlockBase]]:
    """The four stages of a detectron2 ResNet of ``depth`` (blocks not yet wrapped).

    A dilated stage keeps the resolution of the previous one (first stride 1); in res5 block j
    gets dilation ``res5_dilation * res5_multi_grid[j]`` (DeepLab multi-grid).
    """
    if depth not in BLOCKS_PER_STAGE:
        raise FreeSegError(f"RESNETS.DEPTH {depth} not supported; use one of {sorted(BLOCKS_PER_STAGE)}")
    num_blocks = BLOCKS_PER_STAGE[depth]
    basic = depth in (18, 34)
    if basic and (res2_out_channels != 64 or res4_dilation != 1 or res5_dilation != 1 or num_groups != 1):
        raise FreeSegError(
            f"ResNet-{depth} (basic blocks) needs RES2_OUT_CHANNELS 64, NUM_GROUPS 1 and no dilation"
        )
    if len(res5_multi_grid) != num_blocks[3] and any(g != 1 for g in res5_multi_grid):
        raise FreeSegError(
            f"RES5_MULTI_GRID {list(res5_multi_grid)} needs one entry per res5 block ({num_blocks[3]})"
        )
    out_channels = res2_out_channels
    bottleneck_channels = num_groups * width_per_group
    stages: list[list[CNNBlockBase]] = []
    for idx, n in enumerate(num_blocks):
        stage_dilation = {2: res4_dilation, 3: res5_dilation}.get(idx, 1)
        first_stride = 1 if idx == 0 or stage_dilation > 1 else 2
        blocks: list[CNNBlockBase] = []
        for j in range(n):
            stride = first_stride if j == 0 else 1
            if basic:
                blocks.append(BasicBlock(in_channels, out_channels, stride=stride, norm=norm))
            else:
                dilation = stage_dilation * (res5_multi_grid[j] if idx == 3 and len(res5_multi_grid) == n else 1)
                blocks.append(
                    BottleneckBlock(
                        in_channels, out_channels, bottleneck_channels=bottleneck_channels, stride=stride,
                        num_groups=num_groups, norm=norm, stride_in_1x1=stride_in_1x1, dilation=dilation,
                    )
                )
            in_channels = out_channels
        stages.append(blocks)
        out_channels *= 2
        bottleneck_channels *= 2
    return stages


def _resnet_from_cfg(cfg: Any, stem_type: str, res4_dilation: int, res5_multi_grid: Sequence[int]) -> ResNet:
    r = cfg.MODEL.RESNETS
    if stem_type not in STEMS:
        raise FreeSegError(f"MODEL.RESNETS.STEM_TYPE {stem_type!r} unknown; use one of {', '.join(STEMS)}")
    stem = STEMS[stem_type](in_channels=len(cfg.MODEL.PIXEL_MEAN), out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages = make_resnet_stages(
        depth=r.DEPTH,
        in_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stride_in_1x1=r.STRIDE_IN_1X1,
        norm=r.NORM,
        res4_dilation=res4_dilation,
        res5_dilation=r.RES5_DILATION,
        res5_multi_grid=res5_multi_grid,
    )
    return ResNet(stem, stages, out_features=list(r.OUT_FEATURES), freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


def build_resnet_backbone(cfg: Any, input_shape: ShapeSpec | None = None) -> ResNet:
    """detectron2's ``build_resnet_backbone``: basic 7x7 stem, RES5_DILATION 1 or 2."""
    if cfg.MODEL.RESNETS.RES5_DILATION not in (1, 2):
        raise FreeSegError("MODEL.RESNETS.RES5_DILATION must be 1 or 2 for build_resnet_backbone")
    return _resnet_from_cfg(cfg, "basic", res4_dilation=1, res5_multi_grid=(1, 1, 1))


def build_resnet_deeplab_backbone(cfg: Any, input_shape: ShapeSpec | None = None) -> ResNet:
    """detectron2 DeepLab project's builder: STEM_TYPE, RES4_DILATION, RES5_MULTI_GRID (R101c)."""
    r = cfg.MODEL.RESNETS
    if r.RES4_DILATION not in (1, 2) or r.RES5_DILATION not in (1, 2, 4):
        raise FreeSegError("MODEL.RESNETS.RES4_DILATION must be 1 or 2 and RES5_DILATION 1, 2 or 4")
    if r.RES4_DILATION == 2 and r.RES5_DILATION != 4:
        raise FreeSegError("MODEL.RESNETS.RES4_DILATION 2 needs RES5_DILATION 4")
    return _resnet_from_cfg(cfg, r.STEM_TYPE, r.RES4_DILATION, list(r.RES5_MULTI_GRID))
