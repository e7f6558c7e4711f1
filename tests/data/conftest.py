"""Fixtures: tiny data sets on disk and the built-in catalog pointed at them."""
from __future__ import annotations

from pathlib import Path

import pytest

from freeseg.data.builtin import dataset_root, register_all

from .fakes import write_ade, write_coco, write_voc


@pytest.fixture
def builtin_root(tmp_path: Path):
    """The built-in data sets registered under ``tmp_path`` (restored afterwards)."""
    register_all(str(tmp_path), replace=True)
    yield tmp_path
    register_all(dataset_root(), replace=True)


@pytest.fixture
def coco_root(builtin_root: Path) -> Path:
    return write_coco(builtin_root)


@pytest.fixture
def voc_root(builtin_root: Path) -> Path:
    return write_voc(builtin_root)


@pytest.fixture
def ade_root(builtin_root: Path) -> Path:
    return write_ade(builtin_root)
