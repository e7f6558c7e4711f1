"""Files of jobs that can be interrupted and continued.

Writing so that an interrupted job never leaves a truncated one behind: checkpoints, their
``last_checkpoint`` pointer and the outputs of the data preparation scripts are all skipped or
trusted when they exist, so a half-written file would be taken as done. And the fingerprints
under which a continued job recognises its own progress (:func:`file_identity`,
:func:`settings_digest`).
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from typing import IO, Any, Iterator, Mapping


@contextmanager
def atomic_write(path: str, mode: str = "wb", *, durable: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; when the block ends without an error
    the file is renamed over ``path`` (``os.replace`` is atomic on POSIX), else it is removed.

    Args:
        path: the file to write.
        mode: ``"wb"`` or ``"w"``.
        durable: fsync before the rename, so that the new content survives a power loss too
            (checkpoints); without it only interrupted processes are covered (many small files).
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def file_identity(path: str) -> list:
    """[absolute path, size, modification time in ns] of a file: what says, in a fingerprint of
    a job's settings, that it is still the same file (weights, an input)."""
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short stable hash of a job's settings (JSON-able values; others by ``str``): the
    fingerprint under which an interrupted job's progress is kept (demo, evaluation)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
