"""User-facing errors.

Anything a user can fix (a missing file, a wrong config key, a checkpoint that does not match)
raises :class:`FreeSegError` with a one-line message that names the thing and the fix. The
command-line entry points print that line and exit non-zero instead of a traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class FreeSegError(RuntimeError):
    """An error caused by the user's input, with a one-line, actionable message."""


class ConfigError(FreeSegError, KeyError):
    """A bad config key, value or file."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate that best matches ``name`` (for "did you mean ...?" hints), or None."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def missing_file(path: str, what: str, fix: str) -> FreeSegError:
    """A FreeSegError for a file that is not there: ``what`` it is and how to get it."""
    return FreeSegError(f"{what} not found: {path}. {fix}")
