"""ResNet blocks and stems with detectron2's module names (``conv1``, ``shortcut``, ``conv1.norm``).

The names matter: detectron2 / Mask2Former / FreeSeg checkpoints load into these modules with
no renaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from freeseg.layers.batch_norm import FrozenBatchNorm2d, get_norm
from freeseg.layers.wrappers import Conv2d, c2_msra_fill


class CNNBlockBase(nn.Module):
    """A block with known ``in_channels``, ``out_channels`` and ``stride``, that can be frozen."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> "CNNBlockBase":
        """Stop gradients to every parameter and turn every BatchNorm into FrozenBatchNorm2d."""
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class BasicBlock(CNNBlockBase):
    """Two 3x3 convs (ResNet-18/34); a 1x1 projection shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "BN") -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = (
            Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, norm=get_norm(norm, out_channels))
            if in_channels != out_channels
            else None
        )
        self.conv1 = Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False, norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class BottleneckBlock(CNNBlockBase):
    """1x1 -> 3x3 (grouped, dilated) -> 1x1 bottleneck (ResNet-50 and deeper).

    Args:
        bottleneck_channels: width of the 3x3 conv.
        stride: applied in the first 1x1 conv when ``stride_in_1x1`` (MSRA models), else in the
            3x3 conv (torchvision / DeepLab models).
        num_groups: groups of the 3x3 conv (ResNeXt).
        dilation: dilation (and padding) of the 3x3 conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = (
            Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, norm=get_norm(norm, out_channels))
            if in_channels != out_channels
            else None
        )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation, bias=False,
            groups=num_groups, dilation=dilation, norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class BasicStem(CNNBlockBase):
    """7x7 stride-2 conv + ReLU + 3x3 stride-2 max-pool (stride 4 in total)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN") -> None:
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels, out_channels, 7, stride=2, padding=3, bias=False, norm=get_norm(norm, out_channels)
        )
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class DeepLabStem(CNNBlockBase):
    """Three 3x3 convs (out/2 stride 2, out/2, out) + ReLUs + 3x3 stride-2 max-pool (R101c)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 128, norm: str = "BN") -> None:
        super().__init__(in_channels, out_channels, 4)
        half = out_channels // 2
        self.conv1 = Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False, norm=get_norm(norm, half))
        self.conv2 = Conv2d(half, half, 3, padding=1, bias=False, norm=get_norm(norm, half))
        self.conv3 = Conv2d(half, out_channels, 3, padding=1, bias=False, norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3):
            c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        x = F.relu_(self.conv3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


STEMS: dict[str, type[CNNBlockBase]] = {"basic": BasicStem, "deeplab": DeepLabStem}
