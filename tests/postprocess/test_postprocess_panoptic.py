"""Panoptic inference (Mask2Former's algorithm) on hand-built cases."""
from __future__ import annotations

import pytest
import torch

from freeseg.postprocess import panoptic_inference
from freeseg.utils.errors import FreeSegError

BIG = 20.0


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.full((h, w), -BIG)
    m[y0:y1, x0:x1] = BIG
    return m


def _scores(rows: list[tuple[int, float]], k: int) -> torch.Tensor:
    """One row per query: (class, probability), the rest spread evenly."""
    out = torch.zeros(len(rows), k)
    for q, (c, p) in enumerate(rows):
        out[q] = (1 - p) / (k - 1)
        out[q, c] = p
    return out


IS_THING = torch.tensor([True, True, False, False])  # classes 0, 1 things; 2, 3 stuff


def test_overlapping_things_and_merged_stuff():
    h, w = 8, 8
    masks = torch.stack([
        _box(h, w, 0, 4, 0, 4),   # q0 thing 0, score .95
        _box(h, w, 2, 6, 2, 6),   # q1 thing 1, score .90: loses the overlap with q0
        _box(h, w, 6, 8, 0, 4),   # q2 stuff 2
        _box(h, w, 6, 8, 4, 8),   # q3 stuff 2 again: merged into q2's segment
        _box(h, w, 0, 2, 6, 8),   # q4 below the object-mask threshold
    ])
    scores = _scores([(0, 0.95), (1, 0.90), (2, 0.85), (2, 0.99), (3, 0.5)], 4)
    pan, segments = panoptic_inference(scores, masks, IS_THING, object_mask_threshold=0.8, overlap_threshold=0.5)
    assert pan.dtype == torch.int32 and pan.shape == (h, w)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in segments] == [(1, 0, True), (2, 1, True), (3, 2, False)]
    assert (pan[0:4, 0:4] == 1).all()
    assert (pan[2:6, 4:6] == 2).all() and (pan[4:6, 2:4] == 2).all()
    assert (pan[6:8, :] == 3).all()
    assert (pan[0:2, 6:8] == 0).all()  # q4 dropped: void
    assert segments[2]["area"] == 16 and segments[2]["score"] == pytest.approx(0.99)
    assert segments[1]["area"] == 12 and segments[0]["area"] == 16
    assert segments[0]["score"] == pytest.approx(0.95)
    for s in segments:
        assert s["area"] == int((pan == s["id"]).sum())


def test_overlap_threshold_edge():
    # q1 keeps exactly half of its 16 pixels: kept at 0.5 (ratio not < threshold), dropped above.
    h, w = 4, 8
    masks = torch.stack([_box(h, w, 0, 4, 0, 4), _box(h, w, 0, 4, 2, 6)])
    scores = _scores([(0, 0.95), (1, 0.9)], 4)
    _, kept = panoptic_inference(scores, masks, IS_THING, 0.8, overlap_threshold=0.5)
    _, dropped = panoptic_inference(scores, masks, IS_THING, 0.8, overlap_threshold=0.51)
    assert len(kept) == 2 and kept[1]["area"] == 8
    assert len(dropped) == 1


def test_object_threshold_is_strict():
    masks = _box(4, 4, 0, 4, 0, 4)[None]
    scores = torch.tensor([[0.8, 0.2 / 3, 0.2 / 3, 0.2 / 3]])
    _, at = panoptic_inference(scores, masks, IS_THING, object_mask_threshold=0.8, overlap_threshold=0.8)
    _, below = panoptic_inference(scores, masks, IS_THING, object_mask_threshold=0.79, overlap_threshold=0.8)
    assert at == [] and len(below) == 1


def test_empty_predictions_and_empty_masks():
    pan, segments = panoptic_inference(torch.zeros(0, 4), torch.zeros(0, 5, 6), IS_THING, 0.8, 0.8)
    assert pan.shape == (5, 6) and pan.dtype == torch.int32 and segments == [] and (pan == 0).all()
    masks = torch.full((1, 5, 6), -BIG)  # confident class, but the mask is empty
    pan, segments = panoptic_inference(_scores([(0, 0.99)], 4), masks, IS_THING, 0.8, 0.8)
    assert segments == [] and (pan == 0).all()


def test_ids_beyond_255_stay_distinct():
    n = 300
    masks = torch.full((n, 1, n), -BIG)
    masks[torch.arange(n), 0, torch.arange(n)] = BIG  # query i owns column i
    scores = _scores([(i % 2, 0.9) for i in range(n)], 4)
    pan, segments = panoptic_inference(scores, masks, IS_THING, 0.8, 0.8)
    assert len(segments) == n and pan.dtype == torch.int32
    assert pan[0].tolist() == list(range(1, n + 1))


def test_bad_is_thing_length():
    with pytest.raises(FreeSegError, match="is_thing"):
        panoptic_inference(torch.rand(2, 3), torch.randn(2, 4, 4), IS_THING, 0.8, 0.8)
