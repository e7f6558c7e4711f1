"""Seen/unseen class splits shared by every evaluator.

Splits always come from the data set's metadata (``evaluation_set``, or ``trainable_flag`` where
1 = seen), never from hard-coded class lists (FreeSeg's panoptic and instance evaluators hard-code
them, and the lists disagree with ``trainable_flag``; see docs/evaluation.md).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from ..utils.errors import FreeSegError


def resolve_evaluation_sets(
    num_classes: int,
    evaluation_set: Mapping[str, Sequence[int]] | None = None,
    trainable_flag: Sequence[int] | None = None,
) -> dict[str, list[int]]:
    """Named sets of contiguous class ids to report ``<metric>-<set>`` / ``-un<set>`` for.

    ``evaluation_set`` wins; otherwise ``trainable_flag`` gives ``{"base": seen ids}``; with
    neither, no sets.
    """
    if evaluation_set:
        out = {}
        for name, ids in evaluation_set.items():
            ids = [int(i) for i in ids]
            bad = [i for i in ids if not 0 <= i < num_classes]
            if bad:
                raise FreeSegError(
                    f"evaluation_set '{name}' has class ids {bad[:5]} outside 0..{num_classes - 1}; "
                    "fix the data set's metadata"
                )
            out[str(name)] = sorted(set(ids))
        return out
    split = seen_unseen(num_classes, trainable_flag)
    return {"base": split[0]} if split is not None else {}


def seen_unseen(
    num_classes: int, trainable_flag: Sequence[int] | None
) -> tuple[list[int], list[int]] | None:
    """(seen ids, unseen ids) from ``trainable_flag`` (1 = seen), or None without flags."""
    if trainable_flag is None:
        return None
    flags = [int(f) for f in trainable_flag]
    if len(flags) != num_classes:
        raise FreeSegError(
            f"trainable_flag has {len(flags)} entries but the data set has {num_classes} classes; "
            "fix the data set's metadata"
        )
    return [i for i, f in enumerate(flags) if f], [i for i, f in enumerate(flags) if not f]


def harmonic_mean(values: Sequence[float]) -> float:
    """``len / sum(1/v)`` as FreeSeg computes hIoU: a zero gives 0, a NaN gives NaN."""
    if any(math.isnan(v) for v in values):
        return math.nan
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)
