"""detectron2-style ``Conv2d`` (with optional norm and activation) and its weight initialisers."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``norm`` module and ``activation`` callable.

    Keeping the norm as a child named ``norm`` gives detectron2's checkpoint names
    (``conv1.weight``, ``conv1.norm.running_mean``, ...).

    Args:
        *args, **kwargs: as for ``nn.Conv2d``.
        norm: module applied after the convolution, or None.
        activation: callable applied last (e.g. ``F.relu``), or None.
    """

    def __init__(
        self,
        *args,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H', W']."""
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's "XavierFill" (uniform, fan_in, gain 1) on ``weight``; bias to zero."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)


def c2_msra_fill(module: nn.Module) -> None:
    """Caffe2's "MSRAFill" (normal, fan_out, ReLU gain) on ``weight``; bias to zero."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)
