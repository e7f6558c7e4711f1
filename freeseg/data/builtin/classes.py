"""Class lists (package data under ``classes/``) and the metadata derived from them."""
from __future__ import annotations

import colorsys
import functools
import json
from importlib import resources
from typing import Any

from ...utils.errors import FreeSegError


@functools.lru_cache(maxsize=None)
def load_classes(name: str) -> dict[str, Any]:
    """The JSON ``classes/<name>.json``: ``{"categories": [{id, name, isthing?, color?}], "unseen_ids"?}``."""
    try:
        text = resources.files(__package__).joinpath("classes", f"{name}.json").read_text()
    except FileNotFoundError as e:
        raise FreeSegError(f"class list '{name}' missing from freeseg/data/builtin/classes/; reinstall freeseg") from e
    data = json.loads(text)
    data["categories"] = with_defaults(data["categories"])
    return data


def with_defaults(cats: list[dict]) -> list[dict]:
    """The categories with ``isthing`` (0: stuff) and ``color`` filled in where they lack them."""
    return [{"isthing": 0, "color": _colour(i), **c} for i, c in enumerate(cats)]


def _colour(i: int) -> list[int]:
    # Deterministic, well-spread colours for lists that publish none (golden-ratio hue steps).
    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * ((i * 7) % 3) / 2, 0.95 - 0.3 * ((i * 5) % 2))
    return [int(r * 255), int(g * 255), int(b * 255)]


def categories_meta(cats: list[dict]) -> dict[str, Any]:
    """detectron2-style metadata for a category list in contiguous order (things and stuff share
    one contiguous space: ``stuff_classes`` holds every name)."""
    return {
        "stuff_classes": [c["name"] for c in cats],
        "stuff_colors": [c["color"] for c in cats],
        "thing_classes": [c["name"] for c in cats if c["isthing"]],
        "thing_colors": [c["color"] for c in cats if c["isthing"]],
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if c["isthing"]},
    }


def split_meta(name: str) -> tuple[dict, dict, dict, list[dict], list[dict], list[dict]]:
    """(all, base, novel) metadata + category lists of a class list with ``unseen_ids``."""
    data = load_classes(name)
    cats = data["categories"]
    unseen = set(data.get("unseen_ids", []))
    base = [c for c in cats if c["id"] not in unseen]
    novel = [c for c in cats if c["id"] in unseen]
    return categories_meta(cats), categories_meta(base), categories_meta(novel), cats, base, novel


def zero_shot_fields(cats: list[dict], unseen_ids: set[int], with_thing_stuff: bool = True) -> dict[str, Any]:
    """``trainable_flag`` (1 = seen) and ``evaluation_set`` (contiguous ids) for the full list."""
    flag = [0 if c["id"] in unseen_ids else 1 for c in cats]
    ev: dict[str, list[int]] = {"base": [i for i, f in enumerate(flag) if f]}
    if with_thing_stuff:
        ev["novel_thing"] = [i for i, c in enumerate(cats) if c["id"] in unseen_ids and c["isthing"]]
        ev["novel_stuff"] = [i for i, c in enumerate(cats) if c["id"] in unseen_ids and not c["isthing"]]
    return {"trainable_flag": flag, "evaluation_set": ev}


def coco_panoptic_unseen_ids() -> set[int]:
    """Unseen classes of COCO panoptic 133, derived from FreeSeg's 15 unseen COCO-Stuff classes by
    name (a merged class "x-merged" is unseen when "x" is): the 7 things, cardboard, playingfield,
    river, road, grass-merged, tree-merged. Clouds and wall-concrete have no panoptic class of their
    own (they are merged into sky-other-merged / wall-other-merged, named after seen classes).
    The original used a different 9-entry list here (7 things + road); we keep one list per data set."""
    stuff = load_classes("coco_stuff_171")
    unseen_names = {c["name"] for c in stuff["categories"] if c["id"] in set(stuff["unseen_ids"])}
    pan = load_classes("coco_panoptic_133")["categories"]
    return {c["id"] for c in pan if c["name"].removesuffix("-merged") in unseen_names}
