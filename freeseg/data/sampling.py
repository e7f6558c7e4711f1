"""Stage-1 sample selection: at most ``SAMPLE_PER_CLASS`` samples per (task, class)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def sample_per_task_class(dicts: list[dict], per_class: int, seed: int) -> list[dict]:
    """Keep at most ``per_class`` samples of each (task, category_id), drawn with
    ``numpy.random.default_rng(seed)`` WITHOUT replacement (the original drew with replacement,
    so duplicates were possible). As the original, one generator per task, classes in order of
    first appearance, groups smaller than ``per_class`` kept whole. ``per_class <= 0`` keeps all."""
    if per_class <= 0:
        return list(dicts)
    tasks: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for d in dicts:
        tasks[d.get("task", "sem_seg")][d["category_id"]].append(d)
    out: list[dict] = []
    for task in sorted(tasks, key=lambda t: ("sem_seg", "ins_seg", "pan_seg").index(t) if t in ("sem_seg", "ins_seg", "pan_seg") else 9):
        rng = np.random.default_rng(seed)
        for group in tasks[task].values():
            if len(group) <= per_class:
                out.extend(group)
            else:
                idx = rng.choice(len(group), size=per_class, replace=False)
                out.extend(group[i] for i in sorted(idx))
    return out
