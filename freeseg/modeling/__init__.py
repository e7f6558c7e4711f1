"""Models: backbones, pixel decoder, decoder, heads, CLIP and the meta-architectures.

``build_model`` is imported lazily so that importing a submodule (``freeseg.modeling.matcher``)
does not pull in every model, and submodules can import each other without cycles.
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_model"]


def __getattr__(name: str) -> Any:
    if name == "build_model":
        from .build import build_model

        return build_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
