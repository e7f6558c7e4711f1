"""Reports: a plain-text table per metric family, ``results.json`` and per-class CSV files.

Written by hand because the table is a few lines and ``tabulate`` is not a dependency.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from typing import Any, Iterable, Sequence

logger = logging.getLogger(__name__)


def _fmt(value: Any, floatfmt: str) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, floatfmt)
    return str(value)


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], floatfmt: str = ".3f"
) -> str:
    """A GitHub-markdown ("pipe") table with right-aligned columns."""
    cells = [[str(h) for h in headers]] + [[_fmt(v, floatfmt) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def log_summary(family: str, metrics: dict[str, Any], keys: Sequence[str]) -> str:
    """Log (and return) a one-row table of ``keys`` from ``metrics`` for one metric family."""
    keys = [k for k in keys if k in metrics]
    table = format_table(keys, [[metrics[k] for k in keys]])
    logger.info("%s results:\n%s", family, table)
    return table


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN/inf become ``null`` (strict JSON), numpy scalars become floats."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_results_json(results: dict[str, dict[str, Any]], output_dir: str) -> str:
    """Write ``results`` (``{"sem_seg": {...}, "panoptic_seg": {...}, ...}``) to
    ``output_dir/results.json``; returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "results.json")
    with open(path, "w") as f:
        json.dump(to_jsonable(results), f, indent=1, allow_nan=False)
    logger.info("wrote %s", path)
    return path


def save_per_class_csv(
    path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> str:
    """One row per class; NaN written as an empty cell."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if v is None else ("" if isinstance(v, float) and math.isnan(v)
                                               else v) for v in r])
    return path
