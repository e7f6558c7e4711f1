"""Hungarian matcher: cost composition, optimality, both mask costs, edge cases."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from freeseg.losses.mask_losses import (
    dice_loss,
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    pairwise_sigmoid_focal_cost,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
)
from freeseg.modeling.matcher import HungarianMatcher
from freeseg.utils.errors import FreeSegError


def _random_masks(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, h, w, generator=gen) > 0.5


def test_pairwise_costs_equal_per_pair_losses():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 40, generator=gen) * 3
    t = (torch.rand(3, 40, generator=gen) > 0.4).float()
    focal, dice, ce = pairwise_sigmoid_focal_cost(x, t), pairwise_dice_cost(x, t), pairwise_sigmoid_ce_cost(x, t)
    assert focal.shape == dice.shape == ce.shape == (5, 3)
    for i, j in itertools.product(range(5), range(3)):
        xi, tj = x[i : i + 1], t[j : j + 1]
        assert focal[i, j] == pytest.approx(sigmoid_focal_loss(xi, tj, 1).item(), rel=1e-5)
        assert dice[i, j] == pytest.approx(dice_loss(xi, tj, 1).item(), rel=1e-5)
        assert ce[i, j] == pytest.approx(sigmoid_ce_loss(xi, tj, 1).item(), rel=1e-5)


@pytest.mark.parametrize("mask_cost", ["focal", "point_bce"])
def test_recovers_permutation_of_confident_masks(mask_cost):
    gen = torch.Generator().manual_seed(1)
    # Blocky masks: bilinear point sampling only blurs block edges.
    gt = _random_masks(4, 4, 4, gen).repeat_interleave(4, 1).repeat_interleave(4, 2)
    perm = torch.tensor([2, 0, 3, 1])
    # Queries 0..3 predict target perm[q] confidently; queries 4, 5 predict noise.
    pred_masks = torch.cat([(gt[perm].float() * 2 - 1) * 10, torch.randn(2, 16, 16, generator=gen)])
    logits = torch.zeros(1, 6, 4)
    matcher = HungarianMatcher(cost_class=1, cost_mask=20, cost_dice=5, mask_cost=mask_cost, num_points=256)
    torch.manual_seed(0)
    (q, t), = matcher(
        {"pred_logits": logits, "pred_masks": pred_masks[None]},
        [{"labels": torch.tensor([0, 1, 2, 0]), "masks": gt}],
    )
    assert q.tolist() == [0, 1, 2, 3]
    assert t.tolist() == perm.tolist()


def test_focal_cost_downsamples_gt_to_prediction_size():
    # GT at 4x the prediction size: a nearest downsample keeps its block structure.
    gen = torch.Generator().manual_seed(2)
    small = _random_masks(3, 8, 8, gen)
    gt = small.repeat_interleave(4, 1).repeat_interleave(4, 2)  # [3, 32, 32]
    pred = (small.flip(0).float() * 2 - 1) * 8  # query q predicts target 2 - q
    (q, t), = HungarianMatcher(cost_mask=1, cost_dice=1)(
        {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": pred[None]},
        [{"labels": torch.zeros(3, dtype=torch.int64), "masks": gt}],
    )
    assert t.tolist() == [2, 1, 0]


def test_assignment_is_optimal_for_the_full_cost():
    gen = torch.Generator().manual_seed(3)
    num_q, num_t, k = 5, 3, 4
    logits = torch.randn(1, num_q, k + 1, generator=gen) * 2
    masks = torch.randn(1, num_q, 6, 6, generator=gen) * 2
    labels = torch.tensor([1, 3, 1])
    gt = _random_masks(num_t, 6, 6, gen)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=3.0, cost_dice=0.5)
    (q, t), = matcher({"pred_logits": logits, "pred_masks": masks}, [{"labels": labels, "masks": gt}])
    # Cost written out independently, pair by pair.
    prob = logits[0].softmax(-1)

    def cost(i: int, j: int) -> float:
        x, y = masks[0, i].flatten()[None], gt[j].float().flatten()[None]
        return (-2.0 * prob[i, labels[j]] + 3.0 * sigmoid_focal_loss(x, y, 1) + 0.5 * dice_loss(x, y, 1)).item()

    best = min(
        sum(cost(i, j) for j, i in enumerate(rows)) for rows in itertools.permutations(range(num_q), num_t)
    )
    got = sum(cost(int(i), int(j)) for i, j in zip(q, t))
    assert got == pytest.approx(best, abs=1e-5)
    assert q.tolist() == sorted(q.tolist()) and len(set(t.tolist())) == num_t


def test_class_cost_decides_when_masks_are_identical():
    masks = torch.zeros(1, 3, 4, 4)
    logits = torch.full((1, 3, 4), -5.0)
    logits[0, 0, 2] = logits[0, 1, 0] = logits[0, 2, 3] = 5.0  # query 2 says void
    (q, t), = HungarianMatcher()(
        {"pred_logits": logits, "pred_masks": masks},
        [{"labels": torch.tensor([0, 2]), "masks": torch.zeros(2, 4, 4, dtype=torch.bool)}],
    )
    assert dict(zip(q.tolist(), t.tolist())) == {0: 1, 1: 0}


def test_image_without_targets_gets_empty_indices():
    out = {"pred_logits": torch.randn(2, 4, 3), "pred_masks": torch.randn(2, 4, 8, 8)}
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8)},
        {"labels": torch.tensor([1]), "masks": torch.ones(1, 8, 8)},
    ]
    (q0, t0), (q1, t1) = HungarianMatcher()(out, targets)
    assert q0.numel() == t0.numel() == 0 and q0.dtype == torch.int64
    assert q1.numel() == 1 and t1.tolist() == [0]


def test_nan_predictions_do_not_crash_the_matcher():
    out = {"pred_logits": torch.full((1, 3, 3), math.nan), "pred_masks": torch.randn(1, 3, 4, 4)}
    (q, t), = HungarianMatcher()(out, [{"labels": torch.tensor([0, 1]), "masks": torch.ones(2, 4, 4)}])
    assert len(q) == 2


def test_point_matcher_uses_num_points_and_runs_without_grad():
    masks = torch.randn(1, 4, 8, 8, requires_grad=True)
    m = HungarianMatcher(mask_cost="point_bce", num_points=7)
    idx = m({"pred_logits": torch.randn(1, 4, 3), "pred_masks": masks},
            [{"labels": torch.tensor([0, 1]), "masks": torch.ones(2, 16, 16)}])
    assert len(idx[0][0]) == 2


def test_bad_configuration_is_reported():
    with pytest.raises(FreeSegError, match="mask cost"):
        HungarianMatcher(mask_cost="l2")
    with pytest.raises(FreeSegError, match="all matcher costs are 0"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)
    with pytest.raises(FreeSegError, match="targets for a batch"):
        HungarianMatcher()({"pred_logits": torch.zeros(2, 3, 3), "pred_masks": torch.zeros(2, 3, 4, 4)}, [])
