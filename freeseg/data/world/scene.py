"""Procedural scenes: textured stuff regions with occluding coloured shapes on top.

One call of :func:`render_scene` draws an RGB image and its panoptic ground truth (a map of
segment ids plus one record per segment). Everything is drawn with numpy from a
``numpy.random.Generator``, so a seed fixes the whole world.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .classes import WorldClass

_TOP = ("sky", "brick")
_GROUND = ("grass", "water", "sand")


@dataclass
class Segment:
    id: int
    category: WorldClass
    mask: np.ndarray  # bool [H, W]


@dataclass
class Scene:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    segments: list[Segment] = field(default_factory=list)

    def panoptic_ids(self) -> np.ndarray:
        """int32 [H, W]: segment id per pixel, 0 where nothing is labelled."""
        ids = np.zeros(self.image.shape[:2], np.int32)
        for seg in self.segments:
            ids[seg.mask] = seg.id
        return ids


def _texture(name: str, base: tuple[int, int, int], h: int, w: int,
             rng: np.random.Generator) -> np.ndarray:
    """float [h, w, 3] texture of one stuff class, full frame (masked by the caller)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.broadcast_to(np.asarray(base, np.float32), (h, w, 3)).copy()
    noise = rng.normal(0.0, 1.0, (h, w, 1)).astype(np.float32)
    if name == "sky":  # lighter towards the horizon, almost no grain
        img *= (0.85 + 0.25 * yy / h)[..., None]
        img += 3 * noise
    elif name == "grass":  # vertical blades: noise stretched along y
        blades = rng.normal(0, 1, (1, w, 1)).astype(np.float32)
        img += 22 * blades + 10 * noise
    elif name == "water":  # horizontal ripples
        phase = rng.uniform(0, 2 * np.pi)
        img += (18 * np.sin(yy / 2.5 + phase + 0.3 * np.sin(xx / 9.0)))[..., None] + 5 * noise
    elif name == "sand":  # fine speckle
        img += 20 * noise
    elif name == "brick":  # mortar grid, rows offset by half a brick
        row = (yy // 8).astype(int)
        mortar = ((yy % 8) < 1.5) | (((xx + 8 * (row % 2)) % 16) < 1.5)
        img[mortar] = (200, 195, 185)
        img += 6 * noise
    return img


def _shape_mask(shape: str, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if shape == "square":
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    # upward triangle: apex at the top, base at the bottom
    top, bottom = cy - r, cy + r * 0.8
    half_width = (yy - top) / (bottom - top) * r
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)


def render_scene(classes: list[WorldClass], rng: np.random.Generator, size: int = 128,
                 num_things: tuple[int, int] = (2, 5), thing_pool: list[WorldClass] | None = None,
                 min_area: int = 40) -> Scene:
    """Draw one scene: 2–3 stuff regions, then ``num_things`` shapes (later ones occlude).

    ``thing_pool`` restricts which thing classes may appear (default: all).
    """
    by_name = {c.name: c for c in classes}
    things = thing_pool if thing_pool is not None else [c for c in classes if c.isthing]
    h = w = size
    img = np.zeros((h, w, 3), np.float32)
    owner = np.full((h, w), -1, np.int32)  # index into `stuff` below
    horizon = int(rng.uniform(0.3, 0.6) * h)
    stuff = [by_name[str(rng.choice(_TOP))]]
    ground = list(rng.choice(_GROUND, size=2, replace=False))
    split = int(rng.uniform(0.3, 0.7) * w) if rng.random() < 0.5 else w
    stuff += [by_name[str(g)] for g in (ground if split < w else ground[:1])]
    owner[:horizon] = 0
    owner[horizon:, :split] = 1
    if split < w:
        owner[horizon:, split:] = 2
    for i, cls in enumerate(stuff):
        region = owner == i
        img[region] = _texture(cls.name, cls.color, h, w, rng)[region]

    thing_masks: list[tuple[WorldClass, np.ndarray]] = []
    for _ in range(int(rng.integers(num_things[0], num_things[1] + 1))):
        cls = things[int(rng.integers(len(things)))]
        r = rng.uniform(0.09, 0.2) * size
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        mask = _shape_mask(cls.shape, h, w, cy, cx, r)
        shade = rng.uniform(0.85, 1.1)
        img[mask] = np.clip(np.asarray(cls.color, np.float32) * shade, 0, 255)
        img[mask] += rng.normal(0, 4, (int(mask.sum()), 3))
        for _, earlier in thing_masks:  # occlusion: the newer shape hides older pixels
            earlier &= ~mask
        thing_masks.append((cls, mask))

    segments: list[Segment] = []
    covered = np.zeros((h, w), bool)
    for cls, mask in thing_masks:
        if mask.sum() >= min_area:
            segments.append(Segment(len(segments) + 1, cls, mask))
        covered |= mask
    for i, cls in enumerate(stuff):
        mask = (owner == i) & ~covered
        if mask.sum() >= min_area:
            segments.append(Segment(len(segments) + 1, cls, mask))
    return Scene(np.clip(img, 0, 255).astype(np.uint8), segments)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A short English caption naming every segment, e.g. 'a red square and a blue circle on
    grass under the sky.'"""
    things = [s.category.name for s in scene.segments if s.category.isthing]
    stuff = [s.category.name for s in scene.segments if not s.category.isthing]
    rng.shuffle(things)
    parts = []
    if things:
        named = [f"a {t}" for t in things]
        parts.append(", ".join(named[:-1]) + (" and " if len(named) > 1 else "") + named[-1])
    if stuff:
        parts.append(("with " if things else "") + " and ".join(stuff))
    return " ".join(parts) + "."
