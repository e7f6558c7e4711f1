"""Shared machinery of the preparation scripts: parallel map with a progress bar, label-map
remapping with lookup tables, label-count files and count verification. Outputs are written to a
temporary name and renamed: a rerun skips existing outputs, so an interrupted run must never leave
a truncated one."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from ...utils.errors import FreeSegError
from ...utils.files import atomic_write

logger = logging.getLogger(__name__)


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], nproc: int, desc: str) -> list[Any]:
    """``[fn(x) for x in items]`` over ``nproc`` processes with a tqdm bar; results come back to
    the parent (the original edited globals inside workers and lost those edits)."""
    # The bars are closed (cleared) before an error propagates, so its message gets a line of its own.
    if nproc <= 1 or len(items) < 2:
        with tqdm(items, desc=desc, leave=False) as bar:
            return [fn(x) for x in bar]
    with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(nproc) as pool:
        with tqdm(pool.imap(fn, items, chunksize=max(1, len(items) // (nproc * 16))),
                  total=len(items), desc=desc, leave=False) as bar:
            return list(bar)


def make_lut(mapping: dict[int, int]) -> np.ndarray:
    """uint8 lookup table of 256 entries: mapped values, 255 elsewhere."""
    lut = np.full(256, 255, dtype=np.uint8)
    for k, v in mapping.items():
        lut[k] = v
    return lut


def read_uint8_labels(path: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's decode errors
        raise FreeSegError(f"label map {path} cannot be read ({e}); re-download or re-extract it") from None
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise FreeSegError(f"label map {path} is {arr.dtype} {arr.shape}; expected a single-channel uint8 PNG")
    return arr


def save_png_once(array: np.ndarray, path: str) -> None:
    """Write ``array`` as a PNG at ``path`` unless it is there already (atomically: see above)."""
    if os.path.exists(path):
        return
    with atomic_write(path, durable=False) as f:
        Image.fromarray(array).save(f, format="PNG")


def write_json(obj: Any, path: str) -> None:
    """``json.dump`` to ``path`` (its folder created), atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_write(path, "w", durable=False) as f:
        json.dump(obj, f)


def write_remapped(src: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, list[int] | None]:
    """Write ``lut[src]`` to each output path unless it exists; all-255 results are not written
    (as the original). Returns, per output, the sorted labels present (None when empty)."""
    labels: dict[str, list[int] | None] = {}
    for dst, lut in outputs.items():
        out = lut[src]
        present = np.unique(out)
        present = present[present != 255]
        if len(present) == 0:
            labels[dst] = None
            continue
        labels[dst] = [int(v) for v in present]
        save_png_once(out, dst)
    return labels


def write_label_counts(results: Iterable[dict[str, list[int] | None]]) -> dict[str, int]:
    """From per-image ``{output path: labels}``, write ``<out dir>_label_count.json`` (basename →
    sorted labels, the file stage-1 loaders read) for every output folder; returns folder → files."""
    per_dir: dict[str, dict[str, list[int]]] = {}
    for res in results:
        for path, labels in res.items():
            d = per_dir.setdefault(os.path.dirname(path), {})
            if labels is not None:
                d[os.path.basename(path)] = labels
    for folder, counts in per_dir.items():
        write_json(dict(sorted(counts.items())), folder.rstrip("/") + "_label_count.json")
    return {k: len(v) for k, v in per_dir.items()}


def check_published(n_inputs: dict[str, int], expected: dict[str, int] | None) -> None:
    """Before any work: the number of inputs must match the published data set (unless ``--subset``)."""
    for split, n in n_inputs.items():
        if expected and split in expected and expected[split] != n:
            raise FreeSegError(
                f"read {n} {split} files but the published data set has {expected[split]}; "
                "the download is incomplete (pass --subset to prepare a subset)"
            )


def verify_counts(folder_counts: dict[str, int], n_inputs: dict[str, int], expected: dict[str, int] | None) -> None:
    """Every output folder must hold exactly the non-empty results (and the inputs the published counts)."""
    check_published(n_inputs, expected)
    for folder, n in folder_counts.items():
        on_disk = len([f for f in os.listdir(folder) if f.endswith(".png")])
        if on_disk != n:
            raise FreeSegError(f"{folder} holds {on_disk} label maps but {n} were expected; remove it and re-run")
    logger.info("verified: %s", ", ".join(f"{os.path.basename(k)}={v}" for k, v in sorted(folder_counts.items())))


def list_files(folder: str, ext: str, what: str, fix: str) -> list[str]:
    if not os.path.isdir(folder):
        raise FreeSegError(f"{what} folder {folder} not found; {fix}")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(ext))
    if not files:
        raise FreeSegError(f"no *{ext} files in {folder}; {fix}")
    return files


def split_luts(all_ids: list[int], unseen: set[int], value_of: Callable[[int], int]) -> dict[str, np.ndarray]:
    """Lookup tables for "", "_base", "_novel": source value ``value_of(id)`` → contiguous index
    of ``id`` in the full / seen / unseen list."""
    base = [i for i in all_ids if i not in unseen]
    novel = [i for i in all_ids if i in unseen]
    return {
        "": make_lut({value_of(c): k for k, c in enumerate(all_ids)}),
        "_base": make_lut({value_of(c): k for k, c in enumerate(base)}),
        "_novel": make_lut({value_of(c): k for k, c in enumerate(novel)}),
    }
