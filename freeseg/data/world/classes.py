"""The quickstart world's vocabulary: stuff textures and thing shapes × colours.

Every novel (unseen) class is a new combination of words that the base classes use: "green
triangle" is novel while "green square" and "red triangle" are base, so a CLIP that has read
every word can name it, while the segmentation model never sees it labelled in training.
Category ids follow COCO's layout: things first (1..12), then stuff (13..17).
"""
from __future__ import annotations

from dataclasses import dataclass

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 40),
    "green": (45, 190, 70),
    "blue": (45, 80, 225),
    "yellow": (240, 215, 45),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
STUFF: tuple[str, ...] = ("sky", "grass", "water", "sand", "brick")
# One novel combination per shape, each with a different colour; red is never novel, so
# each colour and each shape is still seen in training in other combinations.
NOVEL: frozenset[str] = frozenset({"green triangle", "blue circle", "yellow square"})


@dataclass(frozen=True)
class WorldClass:
    id: int  # COCO-style category id (1-based)
    name: str
    isthing: bool
    color: tuple[int, int, int]
    shape: str = ""  # things only
    seen: bool = True


def world_classes() -> list[WorldClass]:
    """All 17 classes in contiguous order (things, then stuff)."""
    out: list[WorldClass] = []
    for color, rgb in COLORS.items():
        for shape in SHAPES:
            name = f"{color} {shape}"
            out.append(WorldClass(len(out) + 1, name, True, rgb, shape, name not in NOVEL))
    stuff_colors = {"sky": (150, 200, 245), "grass": (70, 125, 50), "water": (40, 110, 150),
                    "sand": (220, 195, 140), "brick": (150, 70, 50)}
    for name in STUFF:
        out.append(WorldClass(len(out) + 1, name, False, stuff_colors[name]))
    return out


def categories_json(classes: list[WorldClass]) -> list[dict]:
    """COCO-style category records (panoptic JSON ``categories``)."""
    return [{"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color),
             "supercategory": "shape" if c.isthing else "texture"} for c in classes]
