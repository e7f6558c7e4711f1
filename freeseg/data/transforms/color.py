"""SSD-style colour augmentation (Mask2Former's ``ColorAugSSDTransform``), written again because
detectron2 is not available. Same operations, ranges and order; random draws come from NumPy's
global generator (the original used Python's ``random``: same distributions)."""
from __future__ import annotations

import cv2
import numpy as np

from .base import AugInput, Augmentation, Transform


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class ColorAugSSDTransform(Transform):
    """Brightness (±32), then either contrast→saturation→hue or saturation→hue→contrast; each
    step applied with probability 1/2; contrast/saturation × U(0.5, 1.5), hue ± 18 (OpenCV units).
    Works in BGR like the original (the image is RGB here, so channels are swapped around it)."""

    def __init__(self, params: dict) -> None:
        self.params = params

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        p = self.params
        img = np.ascontiguousarray(image[:, :, ::-1])  # RGB -> BGR
        if p["brightness"] is not None:
            img = _convert(img, beta=p["brightness"])
        steps = ["contrast", "saturation", "hue"] if p["contrast_first"] else ["saturation", "hue", "contrast"]
        for step in steps:
            value = p[step]
            if value is None:
                continue
            if step == "contrast":
                img = _convert(img, alpha=value)
            elif step == "saturation":
                hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
                hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=value)
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
            else:
                hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
                hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + value) % 180
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return np.ascontiguousarray(img[:, :, ::-1])

    def apply_segmentation(self, seg: np.ndarray, pad_value: int = 255) -> np.ndarray:
        return seg


class ColorAugSSD(Augmentation):
    def __init__(self, brightness_delta: int = 32, contrast: tuple[float, float] = (0.5, 1.5),
                 saturation: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> None:
        self.brightness_delta = brightness_delta
        self.contrast = contrast
        self.saturation = saturation
        self.hue_delta = hue_delta

    def get_transform(self, aug_input: AugInput) -> Transform:
        r = np.random

        def maybe(draw):  # each operation fires with probability 1/2
            return draw() if r.randint(2) else None

        params = {"brightness": maybe(lambda: r.uniform(-self.brightness_delta, self.brightness_delta))}
        params["contrast_first"] = bool(r.randint(2))
        params["contrast"] = maybe(lambda: r.uniform(*self.contrast))
        params["saturation"] = maybe(lambda: r.uniform(*self.saturation))
        params["hue"] = maybe(lambda: int(r.randint(-self.hue_delta, self.hue_delta + 1)))
        return ColorAugSSDTransform(params)
