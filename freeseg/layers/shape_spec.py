from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride of one feature map (detectron2's ShapeSpec, without detectron2)."""

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None
