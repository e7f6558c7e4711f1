"""The backbone contract: images in, a dict of named feature maps out."""
from __future__ import annotations

from torch import nn

from freeseg.layers.shape_spec import ShapeSpec


class Backbone(nn.Module):
    """Base class of every backbone.

    ``forward(x: [B, 3, H, W]) -> {name: [B, C_name, H / stride_name, W / stride_name]}`` with the
    names of ``output_shape()`` (``res2`` ... ``res5`` for everything FreeSeg uses).
    Subclasses fill ``_out_features``, ``_out_feature_channels`` and ``_out_feature_strides``.
    """

    _out_features: list[str]
    _out_feature_channels: dict[str, int]
    _out_feature_strides: dict[str, int]

    @property
    def size_divisibility(self) -> int:
        """Input height and width must be multiples of this (0 = no constraint)."""
        return 0

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{name: ShapeSpec(channels, stride)}`` of every returned feature map."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
