"""Evaluation that survives an interruption: the evaluators' state is saved as it goes, and the
same command continues where the last run stopped.

Evaluating COCO-Stuff's 5,000 validation images takes a day and more on a CPU (25-50 s per
image), and long on one GPU too (100 CLIP crops per task and image); a Ctrl-C, a cluster's time limit or a lost SSH session
used to throw all of it away. :class:`EvaluationProgress` keeps one file per process,
``<OUTPUT_DIR>/inference/<data set>/eval_progress.rank<r>.pth``, holding the keys of the images
evaluated so far and the evaluators' accumulated state (``DatasetEvaluator.state_dict``) as of
the last whole image, under a fingerprint of everything that changes the results (config,
weights file, data set, number of processes). It is written atomically every ``interval_s``
seconds, when the run is stopped and once every image is done (before the metrics, which can
take minutes), and removed when the metrics have been computed. A run
with other settings ignores (and later replaces) it.

A process's test loader yields its share of the data set in a fixed order, and samples are
evaluated in that order, so what is done is always the first n samples of the stream: a
continued run skips those (checking each one's name against the file, so that a data set edited
in between is an error rather than a silent mix).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Mapping, Sequence

import torch

from ..utils.errors import FreeSegError
from ..utils.files import atomic_write
from .evaluator import DatasetEvaluator

logger = logging.getLogger(__name__)

_FORMAT = "freeseg evaluation progress v1"


def sample_key(inp: Mapping[str, Any]) -> str:
    """What names an evaluation sample in the progress file: its image file (or id), and its
    class for stage-1 samples (one per class present in an image)."""
    key = str(inp.get("file_name", inp.get("image_id", "")))
    return f"{key}#{inp['category_id']}" if "category_id" in inp else key


class EvaluationProgress:
    """Save and restore one process's share of an evaluation.

    Args:
        path: the progress file.
        fingerprint: a string that changes with anything that changes the results.
        interval_s: seconds between saves while images are evaluated (a save also happens when
            the run is stopped).
    """

    def __init__(self, path: str, fingerprint: str, interval_s: float = 120.0) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.interval_s = interval_s
        self.done: list[str] = []  # sample keys, in stream order: the first len(done) are done
        self.saved = 0  # how many of them the file holds
        self._position = 0  # samples of the stream seen so far in this run
        self._evaluator: DatasetEvaluator | None = None
        self._last_save = time.monotonic()
        self._consistent = True  # False while the evaluators are half-way through a batch

    def start(self, evaluator: DatasetEvaluator) -> int:
        """Attach the (reset) evaluator; restore an earlier run's state when the file holds one
        with this fingerprint. Returns how many images that run had evaluated."""
        self._evaluator = evaluator
        if evaluator.state_dict() is None:
            logger.info("evaluation progress is not saved: an evaluator of %s keeps no state_dict",
                        type(evaluator).__name__)
            self._evaluator = None
            return 0
        if not os.path.isfile(self.path):
            return 0
        try:
            # full unpickling: the evaluators' state holds their own classes (PQ counts), and
            # the file is this command's own output in OUTPUT_DIR, not a downloaded one
            saved = torch.load(self.path, map_location="cpu", weights_only=False)
            ok = isinstance(saved, dict) and saved.get("format") == _FORMAT
        except Exception as exc:  # noqa: BLE001 - any damage means "start over", said below
            logger.warning("evaluation progress file %s is unreadable (%s); evaluating every image",
                           self.path, exc)
            return 0
        if not ok or saved.get("fingerprint") != self.fingerprint:
            logger.warning("evaluation progress file %s is from a run with other settings (config, "
                           "weights, data set or number of processes); evaluating every image, it "
                           "will be replaced", self.path)
            return 0
        evaluator.load_state_dict(saved["state"])
        self.done = list(saved["done"])
        self.saved = len(self.done)
        return self.saved

    def pending(self, inputs: Sequence[Mapping[str, Any]]) -> list:
        """The inputs of a batch that an earlier run has not evaluated (FreeSegError if the data
        set's order is not the one that run saw)."""
        kept = []
        for inp in inputs:
            if self._position < len(self.done):
                if sample_key(inp) != self.done[self._position]:
                    raise FreeSegError(
                        f"the data set changed since the interrupted evaluation saved in {self.path}: its sample "
                        f"{self._position + 1} is {sample_key(inp)}, was {self.done[self._position]}; delete that "
                        "file to evaluate from the start"
                    )
            else:
                kept.append(inp)
            self._position += 1
        return kept

    def process(self, evaluator: DatasetEvaluator, inputs: Sequence[Mapping[str, Any]], outputs: list) -> None:
        """``evaluator.process`` a batch, count it as done, and :meth:`save_if_due`."""
        self._consistent = False  # until the evaluators' state and the done list agree again
        evaluator.process(list(inputs), outputs)
        if self._evaluator is not None:
            keys = [sample_key(inp) for inp in inputs]
            self.done.extend(keys)  # one step: a signal sees all of the batch or none of it
        self._consistent = True
        self.save_if_due()

    def save_on_exit(self) -> None:
        """:meth:`save` as the run ends early (an error, a stop), unless a batch was half
        processed: then the evaluators' state is not the done list's, and the last save stands."""
        if self._consistent:
            self.save()

    def save_if_due(self) -> None:
        """:meth:`save` when ``interval_s`` has passed since the last one."""
        if time.monotonic() - self._last_save >= self.interval_s:
            self.save()

    def save(self) -> None:
        """Write the file now (atomically): the evaluated keys and the evaluators' state."""
        if self._evaluator is None or len(self.done) == self.saved:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        payload = {"format": _FORMAT, "fingerprint": self.fingerprint, "done": self.done,
                   "state": self._evaluator.state_dict()}
        with atomic_write(self.path) as f:
            torch.save(payload, f)
        self._last_save = time.monotonic()
        self.saved = len(self.done)

    def finish(self) -> None:
        """The metrics are computed: the file is no longer needed."""
        if os.path.isfile(self.path):
            os.remove(self.path)
