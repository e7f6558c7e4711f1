"""Instance inference (top-k over queries × classes) and boxes from masks."""
from __future__ import annotations

import pytest
import torch

from freeseg.postprocess import instance_inference, masks_to_boxes
from freeseg.utils.errors import FreeSegError


def test_boxes_from_masks():
    masks = torch.zeros(4, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:6] = True
    masks[2, 5, 7] = True  # a single pixel in the corner
    masks[3, 0, 0] = masks[3, 4, 6] = True  # two separate pixels
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[2, 1, 6, 3], [0, 0, 0, 0], [7, 5, 8, 6], [0, 0, 7, 5]]
    assert masks_to_boxes(torch.zeros(0, 3, 3, dtype=torch.bool)).shape == (0, 4)


def test_topk_over_queries_and_classes_with_mask_scores():
    logits = torch.full((2, 4, 4), -3.0)
    logits[0, :2, :2] = 2.0
    logits[1, 1:, 1:] = 1.0
    scores = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.05, 0.45]])
    out = instance_inference(scores, logits, topk=3)
    # top-3 (query, class) pairs: (0,0) .6, (1,0) .5, (1,2) .45; query 1 appears twice.
    assert out["pred_classes"].tolist() == [0, 0, 2]
    assert out["pred_masks"].dtype == torch.bool and out["pred_masks"].shape == (3, 4, 4)
    assert torch.equal(out["pred_masks"][1], out["pred_masks"][2])
    s2, s1 = torch.sigmoid(torch.tensor(2.0)).item(), torch.sigmoid(torch.tensor(1.0)).item()
    assert out["scores"].tolist() == pytest.approx([0.6 * s2, 0.5 * s1, 0.45 * s1], rel=1e-5)
    assert out["pred_boxes"].tolist() == [[0, 0, 2, 2], [1, 1, 4, 4], [1, 1, 4, 4]]


def test_thing_filter_after_topk():
    logits = torch.randn(3, 5, 5)
    scores = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
    is_thing = torch.tensor([True, False, True])
    out = instance_inference(scores, logits, is_thing=is_thing, topk=2)
    assert out["pred_classes"].tolist() == [0]  # top-2 were (0,0) and (1,1); class 1 is stuff
    out = instance_inference(scores, logits, is_thing=is_thing, topk=100)  # capped at Q·K
    assert len(out["scores"]) == 6 and set(out["pred_classes"].tolist()) == {0, 2}


def test_empty_mask_has_zero_score_and_zero_box():
    logits = torch.full((1, 4, 4), -5.0)
    out = instance_inference(torch.tensor([[0.9]]), logits, topk=1)
    assert out["scores"].tolist() == [0.0]
    assert out["pred_boxes"].tolist() == [[0, 0, 0, 0]]


def test_no_queries():
    out = instance_inference(torch.zeros(0, 3), torch.zeros(0, 4, 4), topk=10)
    assert out["pred_masks"].shape == (0, 4, 4) and out["pred_boxes"].shape == (0, 4)


def test_bad_input():
    with pytest.raises(FreeSegError, match="is_thing"):
        instance_inference(torch.rand(2, 3), torch.randn(2, 4, 4), is_thing=torch.tensor([True]))
    with pytest.raises(FreeSegError, match="top-k"):
        instance_inference(torch.rand(2, 3), torch.randn(2, 4, 4), topk=0)
