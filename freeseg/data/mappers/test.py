"""Test mapper (detectron2's default ``DatasetMapper(cfg, is_train=False)`` as FreeSeg uses it)."""
from __future__ import annotations

from typing import Any

from ..transforms import AugInput, ResizeShortestEdge, apply_augmentations
from .common import check_image_size, image_tensor, read_image


class TestMapper:
    """Image resized so its short side is ``min_size`` (long side ≤ ``max_size``), PIL bilinear,
    uint8 [3, h, w]. ``height``/``width`` stay the original size (the model resizes its outputs to
    it). Ground truth is not loaded: evaluators read it through ``sem_seg_file_name`` /
    ``pan_seg_file_name`` / ``segments_info``, which are passed through."""

    __test__ = False  # a mapper for the test split, not a pytest test class

    def __init__(self, *, min_size: int, max_size: int) -> None:
        self.resize = ResizeShortestEdge(min_size, max_size, "choice")

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        image = read_image(d["file_name"])
        check_image_size(d, image)
        out = dict(d)
        out["height"], out["width"] = image.shape[:2]
        out["image"] = image_tensor(apply_augmentations([self.resize], AugInput(image)).image)
        return out
