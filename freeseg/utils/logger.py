"""Logging set-up: console on the main process, a log file per rank, no duplicate handlers."""
from __future__ import annotations

import logging
import os
import sys

_FMT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATEFMT = "%m/%d %H:%M:%S"


def setup_logger(
    output: str | None = None,
    *,
    rank: int = 0,
    name: str = "freeseg",
    level: int = logging.INFO,
) -> logging.Logger:
    """Configure the ``name`` logger and return it.

    Rank 0 logs to stderr and to ``output`` (a file, or a folder → ``<output>/log.txt``); other
    ranks log only to ``log.txt.rank<k>`` in the same folder, so their warnings are not lost but
    the console stays readable. Calling it again replaces the handlers it added before.
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for handler in [h for h in logger.handlers if getattr(h, "_freeseg", False)]:
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FMT, datefmt=_DATEFMT)
    handlers: list[logging.Handler] = []
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stderr))
    if output:
        path = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if rank > 0:
            path = f"{path}.rank{rank}"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(path))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.setLevel(level)
        handler._freeseg = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger
