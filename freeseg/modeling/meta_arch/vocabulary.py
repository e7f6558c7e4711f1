"""The run-time vocabulary both meta-architectures share (class names + per-class flags)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ...utils.errors import FreeSegError

# FreeSeg's task phrases: the names in INPUT.TASK_NAME and the text of the task prompts.
SEMANTIC, INSTANCE, PANOPTIC = "semantic segmentation.", "instance segmentation.", "panoptic segmentation."
# Stage-1 samples name their task with a short key.
TASK_PHRASES: dict[str, str] = {"sem_seg": SEMANTIC, "ins_seg": INSTANCE, "pan_seg": PANOPTIC}
# Where each task's training targets live in a mapper's sample.
TASK_TARGET_KEYS: dict[str, str] = {SEMANTIC: "sem_instances", INSTANCE: "ins_instances", PANOPTIC: "pan_instances"}


def task_phrase(task: str) -> str:
    """FreeSeg's task phrase for a task key ("sem_seg") or phrase ("semantic segmentation.")."""
    if task in TASK_PHRASES:
        return TASK_PHRASES[task]
    if task in TASK_TARGET_KEYS:
        return task
    raise FreeSegError(f"unknown task {task!r}; use one of {sorted(TASK_PHRASES)} or {sorted(TASK_TARGET_KEYS)}")


@dataclass(frozen=True)
class Vocabulary:
    """Class names with ``trainable_flag`` (1 = seen in training; None = all unseen) and
    ``thing_flags`` (1 = countable thing; None = all things)."""

    class_names: tuple[str, ...]
    trainable_flag: tuple[int, ...] | None = None
    thing_flags: tuple[int, ...] | None = None

    @classmethod
    def create(
        cls,
        class_names: Sequence[str],
        trainable_flag: Sequence[int] | None = None,
        thing_flags: Sequence[int] | None = None,
    ) -> "Vocabulary":
        names = [str(n) for n in class_names]
        if not names:
            raise FreeSegError("empty vocabulary: set_vocabulary needs at least one class name")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FreeSegError(f"duplicate class names in the vocabulary: {dupes}; make each name unique")
        for label, flags in (("trainable_flag", trainable_flag), ("thing_flags", thing_flags)):
            if flags is not None and len(flags) != len(names):
                raise FreeSegError(f"{label} has {len(flags)} entries for {len(names)} class names; give one per class")
        return cls(
            tuple(names),
            None if trainable_flag is None else tuple(int(f) for f in trainable_flag),
            None if thing_flags is None else tuple(int(f) for f in thing_flags),
        )

    def is_thing(self, k: int) -> bool:
        return self.thing_flags is None or bool(self.thing_flags[k])
