"""Criterion and matcher against the original FreeSeg's training step (fixture A, train_step.pt)."""
from __future__ import annotations

import pytest
import torch

from freeseg.losses import SetCriterion, apply_loss_weights, prepare_targets
from freeseg.modeling.matcher import HungarianMatcher
from tests.conftest import load_pt

TASK_TARGETS = {
    "semantic segmentation.": "sem_instances",
    "instance segmentation.": "ins_instances",
    "panoptic segmentation.": "pan_instances",
}


@pytest.fixture(scope="module")
def train_step(fixture_a):
    return load_pt(fixture_a / "train_step.pt")


def _inputs(step: dict, task: str):
    rec = step["tasks"][task]
    targets = prepare_targets([t[TASK_TARGETS[task]] for t in step["targets"]], rec["padded_size"])
    aux = [
        {"pred_logits": logits, "pred_masks": masks}
        for logits, masks in zip(rec["aux_pred_logits"], rec["aux_pred_masks"])
    ]
    outputs = {"pred_logits": rec["pred_logits"], "pred_masks": rec["pred_masks"], "aux_outputs": aux}
    return rec, outputs, targets


def _criterion(step: dict) -> SetCriterion:
    # The fixture's config: MASK_WEIGHT 20, DICE_WEIGHT 5, class cost 1, NUM_CLASSES 10.
    return SetCriterion(
        num_classes=len(step["class_names"]),
        matcher=HungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=5.0, mask_cost="focal"),
        weight_dict=step["weight_dict"],
        eos_coef=step["eos_coef"],
        mask_loss="focal_full",
    )


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.mark.parametrize("task", list(TASK_TARGETS))
def test_matcher_indices_equal_reference(train_step, task):
    rec, outputs, targets = _inputs(train_step, task)
    matcher = _criterion(train_step).matcher
    expected = [rec["indices"]] + list(rec["aux_indices"])
    predictions = [outputs] + outputs["aux_outputs"]
    for layer, (pred, want) in enumerate(zip(predictions, expected)):
        got = matcher(pred, targets)
        for (q, t), (wq, wt) in zip(got, want):
            assert torch.equal(q, wq) and torch.equal(t, wt), f"{task} prediction {layer}"


@pytest.mark.parametrize("task", list(TASK_TARGETS))
def test_losses_match_reference(train_step, task):
    rec, outputs, targets = _inputs(train_step, task)
    criterion = _criterion(train_step)
    assert SetCriterion.num_masks(targets, torch.device("cpu")) == rec["num_masks"]
    raw = criterion(outputs, targets)
    want_raw = rec["raw_losses_before_weighting"]
    assert set(raw) == set(want_raw)
    for name, value in want_raw.items():
        assert _rel(raw[name].item(), value) < 1e-4, (task, name, raw[name].item(), value)
    weighted = apply_loss_weights(raw, train_step["weight_dict"])
    assert set(weighted) == set(rec["losses"])  # the last aux output is dropped
    for name, value in rec["losses"].items():
        assert _rel(weighted[name].item(), value) < 1e-4, (task, name, weighted[name].item(), value)


def test_empty_weight_matches_checkpoint(fixture_a, train_step):
    state = load_pt(fixture_a / "model_final.pth")["model"]
    criterion = _criterion(train_step)
    assert "empty_weight" in criterion.state_dict()
    assert torch.equal(criterion.empty_weight, state["criterion.empty_weight"])
