"""Reading images and label maps, checking them, and building per-task targets."""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ...utils.colors import rgb_to_id
from ...utils.errors import FreeSegError

logger = logging.getLogger(__name__)


class CorruptImageError(FreeSegError):
    """An image (or label map) that cannot be decoded; loaders skip it with a warning and count it."""


def _exists(path: str, what: str) -> None:
    # A missing file is a wrong path (an error), not a corrupt one (skipped).
    import os

    if not os.path.exists(path):
        raise FreeSegError(f"{what} {path} not found; check $DETECTRON2_DATASETS and re-run the preparation script")


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] RGB from an image of any mode. 16-bit, 32-bit integer and float grayscale
    are scaled to 0..255 (PIL's ``convert("RGB")`` clips them, so a 16-bit photo turns white):
    ``I;16`` by its full range (as OpenCV), ``I`` / ``F`` by the smallest of 1, 255, 65535 that
    holds their maximum, else by the maximum."""
    if not (im.mode.startswith("I") or im.mode == "F"):
        return np.asarray(im.convert("RGB"))
    gray = np.asarray(im, dtype=np.float64)
    if im.mode.startswith("I;16"):
        top = 65535.0
    else:
        peak = float(gray.max(initial=0.0))
        top = next((t for t in (1.0, 255.0, 65535.0) if peak <= t), peak)
    gray = np.clip(gray * (255.0 / top), 0, 255).round().astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def read_image(path: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB (EXIF orientation is not applied, as detectron2 with format RGB)."""
    _exists(path, "image")
    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_rgb(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise CorruptImageError(f"cannot decode image {path}: {e}") from e


def remap_labels(labels: np.ndarray, lut: Sequence[int] | None, ignore_label: int = 255) -> np.ndarray:
    """``lut[labels]`` (a data set's ``sem_seg_lut``: label value -> class id, e.g. a custom data
    set's seen classes renumbered and its unseen ones ignored); values past the table are
    ignored. ``labels`` itself where ``lut`` is None."""
    if lut is None:
        return labels
    table = np.asarray(lut, dtype=np.int64)
    inside = labels < len(table)
    return np.where(inside, table[np.where(inside, labels, 0)], ignore_label)


def read_label_map(path: str, lut: Sequence[int] | None = None) -> np.ndarray:
    """int64 [H, W] label map (uint8 or uint16 PNG/TIFF), through ``lut`` (:func:`remap_labels`)
    when the data set gives one."""
    _exists(path, "label map")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise CorruptImageError(f"cannot decode label map {path}: {e}") from e
    if arr.ndim != 2:
        raise FreeSegError(f"label map {path} has shape {arr.shape}; expected a single-channel label PNG")
    return remap_labels(arr.astype(np.int64), lut)


def read_panoptic_ids(path: str) -> np.ndarray:
    """int64 [H, W] segment ids from a COCO panoptic PNG (id = R + 256·G + 256²·B, 0 = void)."""
    _exists(path, "panoptic PNG")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise CorruptImageError(f"cannot decode panoptic PNG {path}: {e}") from e
    return rgb_to_id(rgb)


def check_labels(sem: np.ndarray, num_classes: int, ignore_label: int, path: str) -> None:
    """A label value outside [0, num_classes) other than ``ignore_label`` is an error naming the file."""
    bad = (sem >= num_classes) & (sem != ignore_label) | (sem < 0)
    if bad.any():
        v = int(sem[bad][0])
        raise FreeSegError(
            f"label map {path} holds value {v}, outside the {num_classes} classes (ignore = {ignore_label}); "
            "prepare the data set with the matching script or register it with the right class list"
        )


def check_image_size(d: dict, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    if ("height" in d and d["height"] != h) or ("width" in d and d["width"] != w):
        raise FreeSegError(
            f"image {d['file_name']} is {h}x{w} but its data set dict says {d.get('height')}x{d.get('width')}; "
            "regenerate the annotation JSON"
        )


def pad_to_divisible(image: np.ndarray, maps: list[tuple[np.ndarray, int]], size_divisibility: int,
                     image_value: int = 128) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pad bottom/right to a multiple of ``size_divisibility`` (image ``image_value``, each map its
    own value). The original padded to exactly ``size_divisibility`` (so larger images were cut);
    a multiple is the same for crops ≤ the crop size and safe otherwise."""
    if size_divisibility <= 0:
        return image, [m for m, _ in maps]
    h, w = image.shape[:2]
    ph = int(math.ceil(h / size_divisibility) * size_divisibility) - h
    pw = int(math.ceil(w / size_divisibility) * size_divisibility) - w
    if ph == 0 and pw == 0:
        return image, [m for m, _ in maps]
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=image_value)
    return image, [np.pad(m, ((0, ph), (0, pw)), constant_values=v) for m, v in maps]


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → uint8 [3, H, W]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _targets(classes: list[int], masks: list[np.ndarray], shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    if not masks:
        return {"gt_classes": torch.zeros(0, dtype=torch.int64), "gt_masks": torch.zeros((0, *shape), dtype=torch.bool)}
    return {
        "gt_classes": torch.tensor(classes, dtype=torch.int64),
        "gt_masks": torch.from_numpy(np.stack(masks)).bool(),
    }


def semantic_targets(sem: np.ndarray, ignore_label: int) -> dict[str, torch.Tensor]:
    """One mask per class present (sorted class ids), ignore excluded: ``{gt_classes [N], gt_masks [N, H, W]}``."""
    counts = np.bincount(sem.ravel(), minlength=ignore_label + 1)  # faster than np.unique on big maps
    classes = [int(c) for c in np.flatnonzero(counts) if c != ignore_label]
    return _targets(classes, [sem == c for c in classes], sem.shape)


def panoptic_targets(pan: np.ndarray, segments: list[dict[str, Any]], things_only: bool) -> dict[str, torch.Tensor]:
    """Non-crowd segments (things only for the instance task) as masks; segments left with no
    pixel after cropping are dropped (the original kept empty masks; they are no object here)."""
    classes, masks = [], []
    for seg in segments:
        if seg.get("iscrowd", 0) or (things_only and not seg["isthing"]):
            continue
        m = pan == seg["id"]
        if m.any():
            classes.append(int(seg["category_id"]))
            masks.append(m)
    return _targets(classes, masks, pan.shape)
