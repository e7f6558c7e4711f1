"""Class colours for visualisations and the COCO panoptic id <-> RGB encoding.

The palette is deterministic per class index (class k has the same colour in every image and
run with the same vocabulary) and spreads hues by the golden angle, so that neighbouring
indices, which often appear together, never get similar colours. Saturation and brightness
cycle with periods 2 and 3 so that colours whose hues come close again after many steps still
differ in lightness. Written here rather than taken from a plotting library because none of
matplotlib/seaborn is a dependency, and detectron2's hand-made list stops at 80 entries.
"""
from __future__ import annotations

import colorsys

import numpy as np

_GOLDEN = 0.6180339887498949
_SATURATION = (0.80, 0.55)
_VALUE = (0.95, 0.75, 0.60)


def class_colors(num_classes: int, offset: float = 0.07) -> np.ndarray:
    """uint8 [K, 3] RGB colours, one per class index.

    Args:
        num_classes: K.
        offset: hue of class 0 in [0, 1) (0.07: a warm orange, readable on most photos).
    """
    colors = np.empty((max(num_classes, 0), 3), dtype=np.uint8)
    for k in range(num_classes):
        hue = (offset + k * _GOLDEN) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, _SATURATION[k % 2], _VALUE[k % 3])
        colors[k] = (round(r * 255), round(g * 255), round(b * 255))
    return colors


def jitter_color(color: np.ndarray, index: int, amount: int = 40) -> np.ndarray:
    """A deterministic variant of ``color`` (uint8 [3]) for the ``index``-th instance of a class,
    so that touching instances of one class stay distinguishable; index 0 is ``color`` itself."""
    if index == 0:
        return np.asarray(color, dtype=np.uint8)
    rng = np.random.default_rng(index)
    delta = rng.integers(-amount, amount + 1, size=3)
    return np.clip(np.asarray(color, dtype=np.int64) + delta, 0, 255).astype(np.uint8)


def relative_luminance(color: np.ndarray) -> float:
    """WCAG relative luminance in [0, 1] of an sRGB uint8 colour [3]."""
    c = np.asarray(color, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(linear @ np.array([0.2126, 0.7152, 0.0722]))


def text_color_on(background: np.ndarray) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``background`` (WCAG contrast ratio)."""
    lum = relative_luminance(background)
    # contrast with black = (L + 0.05) / 0.05, with white = 1.05 / (L + 0.05)
    return (0, 0, 0) if (lum + 0.05) ** 2 > 0.05 * 1.05 else (255, 255, 255)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic encoding: int [H, W] segment ids -> uint8 [H, W, 3] with
    id = R + 256·G + 256²·B (ids must be < 256³)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"segment ids must lie in [0, 256^3), got [{ids.min()}, {ids.max()}]")
    # The low three bytes of each id as little-endian uint32: R, G, B (5x faster than the arithmetic).
    return np.ascontiguousarray(ids.astype("<u4").view(np.uint8).reshape(*ids.shape, 4)[..., :3])


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`id_to_rgb`: uint8 [H, W, 3] -> int64 [H, W]."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
