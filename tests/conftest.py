"""Shared test helpers: where the golden fixtures live, and skipping when they are absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FREESEG_SHARED", REPO.parent / "shared"))
FIXTURE_A = SHARED / "fixtures" / "reference_a"
FIXTURE_EVAL = SHARED / "fixtures" / "reference_eval"
FREESEG_CONFIGS = SHARED / "reference" / "freeseg_configs"

torch.set_num_threads(min(2, torch.get_num_threads()))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared fixture missing: {path} (set FREESEG_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def fixture_a() -> Path:
    return _require(FIXTURE_A)


@pytest.fixture(scope="session")
def fixture_eval() -> Path:
    return _require(FIXTURE_EVAL)


@pytest.fixture(scope="session")
def freeseg_configs() -> Path:
    return _require(FREESEG_CONFIGS)


def load_pt(path: Path):
    return torch.load(path, weights_only=True, map_location="cpu")
