"""Class-agnostic entity inference."""
from __future__ import annotations

import pytest
import torch

from freeseg.postprocess import entity_inference


def _box(y0: int, y1: int, x0: int, x1: int, h: int = 6, w: int = 6) -> torch.Tensor:
    m = torch.full((h, w), -10.0)
    m[y0:y1, x0:x1] = 10.0
    return m


def test_highest_quality_first_and_no_overlap():
    masks = torch.stack([_box(0, 4, 0, 4), _box(2, 6, 2, 6), _box(0, 2, 4, 6), _box(0, 1, 0, 1)])
    quality = torch.tensor([0.5, 0.9, 0.7, 0.05])
    ids, segments = entity_inference(masks, quality, overlap_threshold=0.5, score_threshold=0.1)
    assert ids.dtype == torch.int32
    # q1 first (id 1, 16 px), q2 second (id 2), q0 keeps 12 of 16 px (id 3); q3 below threshold.
    assert [(s["id"], s["area"]) for s in segments] == [(1, 16), (2, 4), (3, 12)]
    assert [s["score"] for s in segments] == pytest.approx([0.9, 0.7, 0.5])
    assert (ids[2:6, 2:6] == 1).all() and (ids[0:2, 4:6] == 2).all()
    assert ids[0, 0] == 3 and ids[3, 3] == 1
    assert int((ids > 0).sum()) == 32


def test_overlap_threshold_drops_mostly_covered_masks():
    masks = torch.stack([_box(0, 6, 0, 6), _box(0, 6, 0, 3)])
    ids, segments = entity_inference(masks, torch.tensor([0.9, 0.8]), overlap_threshold=0.1)
    assert len(segments) == 1 and (ids == 1).all()


def test_empty():
    ids, segments = entity_inference(torch.full((2, 3, 3), -1.0), torch.tensor([0.9, 0.8]))
    assert segments == [] and (ids == 0).all()
    ids, segments = entity_inference(torch.zeros(0, 3, 4), torch.zeros(0))
    assert ids.shape == (3, 4) and segments == []


def test_more_than_255_entities():
    n = 400
    masks = torch.full((n, 1, n), -10.0)
    masks[torch.arange(n), 0, torch.arange(n)] = 10.0
    ids, segments = entity_inference(masks, torch.linspace(1, 0.5, n))
    assert len(segments) == n and ids[0].tolist() == list(range(1, n + 1))
