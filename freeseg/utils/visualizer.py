"""Overlay pictures of segmentation results (our own, detectron2's ``Visualizer`` is not here).

Masks are blended over the photo in class colours (:mod:`freeseg.utils.colors`) and outlined
with OpenCV contours; each segment gets its label ("name 87%") on a backing box in the class
colour, placed at the segment's most interior point (the maximum of its distance transform,
so labels sit inside thin or concave shapes rather than at a centroid that may lie outside);
labels that would overlap a placed one are moved or, failing that, left out (the legend still
names the class). Semantic and panoptic pictures get a legend panel on the right with each
class's share of the image. Font size and line width scale with the image size so that the
same code reads well on 128 px thumbnails and on 4000 px photos.

Images are uint8 [H, W, 3] RGB numpy arrays throughout.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colors import class_colors, jitter_color, relative_luminance, text_color_on

_PANEL_BG = (248, 248, 248)
_PANEL_TEXT = (25, 25, 25)


@dataclass(frozen=True)
class Style:
    """Sizes in pixels for one picture; :meth:`for_image` scales them with the image."""

    font_size: int
    line_width: int
    padding: int
    alpha: float = 0.55

    @classmethod
    def for_image(cls, height: int, width: int, alpha: float = 0.55) -> "Style":
        # ~2 % of the long side (+4 so thumbnails stay legible), clamped to a readable range
        font = int(np.clip(round(0.02 * max(height, width) + 4), 10, 72))
        return cls(font_size=font, line_width=max(1, round(font / 10)), padding=max(2, font // 5), alpha=alpha)


@dataclass
class Label:
    """Text to place at ``anchor`` (x, y), on a box of ``color`` (uint8 [3])."""

    text: str
    anchor: tuple[int, int]
    color: np.ndarray


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled scalable font: no system font files needed.
    return ImageFont.load_default(size=size)


def label_anchor(mask: np.ndarray) -> tuple[tuple[int, int], float]:
    """((x, y), inradius) of the point of ``mask`` (bool [H, W]) farthest from its boundary
    (the image border counts as boundary). Raises ValueError for an empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("empty mask has no label position")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # distance transform on the bounding box only (cheap on large images), zero-padded so the
    # border is boundary
    crop = np.pad(mask[y0:y1, x0:x1].astype(np.uint8), 1)
    dist = cv2.distanceTransform(crop, cv2.DIST_L2, 5)
    iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return (int(x0 + ix - 1), int(y0 + iy - 1)), float(dist[iy, ix])


def blend_masks(image: np.ndarray, color_map: np.ndarray, covered: np.ndarray, alpha: float) -> np.ndarray:
    """Blend ``color_map`` (uint8 [H, W, 3]) over ``image`` where ``covered`` (bool [H, W])."""
    out = image.astype(np.float32)
    out[covered] = (1 - alpha) * out[covered] + alpha * color_map[covered].astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def outline_color(color: np.ndarray) -> tuple[int, int, int]:
    """The contour colour of a class: its colour, lightened when dark (a dark red outline on
    dark hair or shadow would vanish)."""
    c = np.asarray(color, dtype=np.float64)
    if relative_luminance(c) < 0.12:
        c = 0.55 * c + 0.45 * 255
    return tuple(int(round(v)) for v in c)


def draw_contours(image: np.ndarray, masks: Sequence[np.ndarray], colors: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Outline each mask (bool [H, W]) in its colour (see :func:`outline_color`), holes
    included; returns a new image."""
    out = np.ascontiguousarray(image.copy())
    for mask, color in zip(masks, colors):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, outline_color(color), width, lineType=cv2.LINE_AA)
    return out


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_labels(image: np.ndarray, labels: Sequence[Label], style: Style) -> tuple[np.ndarray, int]:
    """Draw labels in order on semi-opaque boxes, kept inside the image and off each other.

    Returns (new image, number of labels left out for lack of room)."""
    h, w = image.shape[:2]
    font = _font(style.font_size)
    base = Image.fromarray(image).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    placed: list[tuple[int, int, int, int]] = []
    skipped = 0
    pad = style.padding
    for label in labels:
        l, t, r, b = draw.textbbox((0, 0), label.text, font=font)
        bw, bh = r - l + 2 * pad, b - t + 2 * pad
        x, y = label.anchor
        box = None
        for dy in (0, bh, -bh, 2 * bh, -2 * bh):  # try the anchor, then just below / above it
            x0 = int(np.clip(x - bw // 2, 0, max(w - bw, 0)))
            y0 = int(np.clip(y - bh // 2 + dy, 0, max(h - bh, 0)))
            cand = (x0, y0, x0 + bw, y0 + bh)
            if not any(_overlaps(cand, p) for p in placed):
                box = cand
                break
        if box is None:
            skipped += 1
            continue
        placed.append(box)
        fill = tuple(int(c) for c in label.color)
        draw.rounded_rectangle(box, radius=max(1, pad), fill=(*fill, 215))
        draw.text((box[0] + pad - l, box[1] + pad - t), label.text, font=font, fill=(*text_color_on(label.color), 255))
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB")), skipped


def legend_panel(
    entries: Sequence[tuple[str, np.ndarray]], height: int, style: Style, title: str = ""
) -> np.ndarray:
    """A panel (uint8 [height, W, 3]) listing ``(text, colour)`` entries with colour swatches,
    under an optional ``title``, in as many columns as ``height`` needs."""
    font = _font(style.font_size)
    pad = style.padding
    row_h = style.font_size + 2 * pad
    top = row_h if title else 0
    rows_per_col = max(1, (height - 2 * pad - top) // row_h)
    ncols = max(1, -(-len(entries) // rows_per_col))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((measure.textlength(text, font=font) for text, _ in entries), default=0)
    col_w = int(style.font_size + 3 * pad + text_w + 2 * pad)
    width = max(ncols * col_w + pad, int(measure.textlength(title, font=font)) + 3 * pad)
    panel = Image.new("RGB", (width, height), _PANEL_BG)
    draw = ImageDraw.Draw(panel)
    if title:
        draw.text((pad, pad + row_h // 2), title, font=font, fill=(110, 110, 110), anchor="lm")
    for i, (text, color) in enumerate(entries):
        col, row = divmod(i, rows_per_col)
        x, y = pad + col * col_w, pad + top + row * row_h
        sw = style.font_size
        draw.rectangle((x, y + pad, x + sw, y + pad + sw), fill=tuple(int(c) for c in color), outline=(90, 90, 90))
        draw.text((x + sw + 2 * pad, y + pad + sw // 2), text, font=font, fill=_PANEL_TEXT, anchor="lm")
    return np.asarray(panel)


def attach_panel(image: np.ndarray, panel: np.ndarray) -> np.ndarray:
    """``image`` with ``panel`` to its right, separated by a thin rule."""
    rule = np.full((image.shape[0], 1, 3), 160, dtype=np.uint8)
    return np.concatenate([image, rule, panel[: image.shape[0]]], axis=1)


def _percent(fraction: float) -> str:
    if fraction < 0.0005:  # a few pixels: "0.0%" would read as absent
        return "<0.1%"
    return f"{100 * fraction:.1f}%" if fraction < 0.1 else f"{100 * fraction:.0f}%"


class Visualizer:
    """Draws results for one vocabulary.

    Args:
        class_names: the K names, in the model's class order.
        colors: uint8 [K, 3] (default :func:`class_colors`).
        alpha: opacity of the mask colours over the photo.
        min_label_fraction: segments smaller than this share of the image get no label.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        colors: np.ndarray | None = None,
        alpha: float = 0.55,
        min_label_fraction: float = 0.002,
    ) -> None:
        self.class_names = list(class_names)
        self.colors = class_colors(len(self.class_names)) if colors is None else np.asarray(colors, dtype=np.uint8)
        if len(self.colors) < len(self.class_names):
            raise ValueError(f"{len(self.colors)} colours for {len(self.class_names)} classes")
        self.alpha = alpha
        self.min_label_fraction = min_label_fraction
        self.skipped_labels = 0  # labels left out in the last picture (for tests and logs)

    def _style(self, image: np.ndarray) -> Style:
        return Style.for_image(image.shape[0], image.shape[1], self.alpha)

    def _segments(
        self,
        image: np.ndarray,
        masks: list[np.ndarray],
        colors: list[np.ndarray],
        texts: list[str],
        style: Style,
        label_order: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Fill and outline masks in list order (later ones on top), then label them in
        ``label_order`` (default: list order); earlier labels win contested room."""
        color_map = np.zeros_like(image)
        covered = np.zeros(image.shape[:2], dtype=bool)
        for mask, color in zip(masks, colors):
            color_map[mask] = color
            covered |= mask
        out = draw_contours(blend_masks(image, color_map, covered, style.alpha), masks, colors, style.line_width)
        min_area = self.min_label_fraction * mask_area(image)
        labels = []
        for i in range(len(masks)) if label_order is None else label_order:
            if masks[i].sum() < min_area:
                continue
            anchor, inradius = label_anchor(masks[i])
            if inradius >= 1.5:  # not a hairline sliver
                labels.append(Label(texts[i], anchor, colors[i]))
        out, self.skipped_labels = draw_labels(out, labels, style)
        return out

    def _legend(self, image: np.ndarray, class_area: dict[int, int], style: Style) -> np.ndarray:
        total = mask_area(image)
        order = sorted(class_area, key=lambda k: -class_area[k])
        entries = [(f"{self.class_names[k]}  {_percent(class_area[k] / total)}", self.colors[k]) for k in order]
        # the title says the legend's numbers are areas (the labels on segments show scores)
        panel = legend_panel(entries, image.shape[0], style, title="share of image")
        return attach_panel(image, panel) if entries else image

    def semantic(self, image: np.ndarray, label_map: np.ndarray, *, legend: bool = True) -> np.ndarray:
        """``label_map`` int [H, W] of class indices (values ≥ K, e.g. 255, are left undrawn)."""
        _check_size(image, label_map)
        style = self._style(image)
        classes, counts = np.unique(label_map, return_counts=True)
        present = {int(k): int(n) for k, n in zip(classes, counts) if 0 <= k < len(self.class_names)}
        order = sorted(present, key=lambda k: -present[k])  # big regions first: labels go to them
        masks = [label_map == k for k in order]
        out = self._segments(image, masks, [self.colors[k] for k in order], [self.class_names[k] for k in order], style)
        return self._legend(out, present, style) if legend else out

    def panoptic(self, image: np.ndarray, ids: np.ndarray, segments: Sequence[dict], *, legend: bool = True) -> np.ndarray:
        """``ids`` int [H, W] (0 = void) with ``segments`` ``{"id", "category_id", "isthing", "score"?}``."""
        _check_size(image, ids)
        style = self._style(image)
        masks, colors, texts, class_area = [], [], [], {}
        seen: dict[int, int] = {}
        for seg in sorted(segments, key=lambda s: -int((ids == s["id"]).sum())):
            mask = ids == seg["id"]
            if not mask.any():
                continue
            k = int(seg["category_id"])
            # things of one class get nearby but distinct colours; stuff keeps the class colour
            n = seen.get(k, 0) if seg.get("isthing", True) else 0
            seen[k] = n + 1
            masks.append(mask)
            colors.append(jitter_color(self.colors[k], n))
            score = seg.get("score")
            texts.append(self.class_names[k] + (f" {_percent(float(score))}" if score is not None else ""))
            class_area[k] = class_area.get(k, 0) + int(mask.sum())
        out = self._segments(image, masks, colors, texts, style)
        return self._legend(out, class_area, style) if legend else out

    def instances(
        self, image: np.ndarray, masks: np.ndarray, classes: Sequence[int], scores: Sequence[float]
    ) -> np.ndarray:
        """``masks`` bool [N, H, W]; the most confident instance is drawn on top and labelled first."""
        if len(masks):
            _check_size(image, masks[0])
        style = self._style(image)
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        seen: dict[int, int] = {}
        colors = []
        for i in order:
            k = int(classes[i])
            colors.append(jitter_color(self.colors[k], seen.get(k, 0)))
            seen[k] = seen.get(k, 0) + 1
        texts = [f"{self.class_names[int(classes[i])]} {_percent(float(scores[i]))}" for i in order]
        n = len(order)
        # paint the least confident first so the best ends on top; label the best first
        return self._segments(
            image, [masks[i] for i in order][::-1], colors[::-1], texts[::-1], style, label_order=range(n - 1, -1, -1)
        )

    def entity(self, image: np.ndarray, ids: np.ndarray, segments: Sequence[dict]) -> np.ndarray:
        """Class-agnostic segments: ``ids`` int [H, W] (0 = none), ``segments`` ``{"id", "score"}``."""
        _check_size(image, ids)
        style = self._style(image)
        palette = class_colors(max((int(s["id"]) for s in segments), default=0) + 1, offset=0.55)
        masks, colors, texts = [], [], []
        for seg in segments:
            mask = ids == seg["id"]
            if mask.any():
                masks.append(mask)
                colors.append(palette[int(seg["id"])])
                texts.append(f"#{seg['id']} {_percent(float(seg.get('score', 1.0)))}")
        return self._segments(image, masks, colors, texts, style)


def mask_area(image: np.ndarray) -> int:
    return int(image.shape[0] * image.shape[1])


def _check_size(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if tuple(mask.shape[-2:]) != tuple(image.shape[:2]):
        raise ValueError(f"result size {tuple(mask.shape[-2:])} != image size {tuple(image.shape[:2])}")
