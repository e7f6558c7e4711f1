"""SetCriterion: hand-computed loss values, both mask-loss flavours, gradients, bad input."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from freeseg.losses import SetCriterion, apply_loss_weights, prepare_targets
from freeseg.losses.mask_losses import dice_loss, sigmoid_focal_loss
from freeseg.losses.point_sampling import get_uncertain_point_coords_with_randomness, point_sample
from freeseg.modeling.matcher import HungarianMatcher
from freeseg.utils.errors import FreeSegError


class FixedMatcher:
    """Returns fixed indices, so that loss values can be checked by hand."""

    def __init__(self, indices):
        self.indices = indices

    def __call__(self, outputs, targets):
        return [(torch.tensor(q), torch.tensor(t)) for q, t in self.indices]


def _criterion(indices, num_classes=3, **kw) -> SetCriterion:
    return SetCriterion(
        num_classes=num_classes, matcher=FixedMatcher(indices), weight_dict={"loss_ce": 1.0},
        eos_coef=0.1, **kw,
    )


def test_focal_and_dice_values_by_hand():
    # logit 0 -> p = 0.5: focal = alpha_t * 0.25 * log 2 per pixel.
    x = torch.zeros(1, 4)
    t = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    want = (2 * 0.25 + 2 * 0.75) * 0.25 * math.log(2) / 4
    assert sigmoid_focal_loss(x, t, 1).item() == pytest.approx(want, rel=1e-6)
    assert sigmoid_focal_loss(x, t, 2).item() == pytest.approx(want / 2, rel=1e-6)
    # dice: 1 - (2*1 + 1) / (2 + 2 + 1)
    assert dice_loss(x, t, 1).item() == pytest.approx(1 - 3 / 5, rel=1e-6)


def test_cross_entropy_trains_unmatched_queries_towards_void():
    logits = torch.randn(2, 3, 4)
    targets = [
        {"labels": torch.tensor([2]), "masks": torch.ones(1, 8, 8)},
        {"labels": torch.tensor([0, 1]), "masks": torch.ones(2, 8, 8)},
    ]
    crit = _criterion([([1], [0]), ([2, 0], [1, 0])])
    loss = crit.loss_labels({"pred_logits": logits}, targets, crit.matcher(None, None))["loss_ce"]
    classes = torch.tensor([[3, 2, 3], [0, 3, 1]])
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    per = -logits.log_softmax(-1).gather(-1, classes[..., None])[..., 0]
    want = (per * weight[classes]).sum() / weight[classes].sum()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)


def test_focal_full_upsamples_predictions_to_target_size():
    pred = torch.randn(1, 2, 4, 6)
    gt = torch.rand(1, 16, 24) > 0.5
    crit = _criterion([([1], [0])])
    out = crit.loss_masks({"pred_masks": pred}, [{"labels": torch.tensor([0]), "masks": gt}],
                          crit.matcher(None, None), num_masks=1.0)
    up = F.interpolate(pred[:, 1:2], size=(16, 24), mode="bilinear", align_corners=False)[0].flatten(1)
    assert out["loss_mask"].item() == pytest.approx(sigmoid_focal_loss(up, gt.float().flatten(1), 1).item(), rel=1e-6)
    assert out["loss_dice"].item() == pytest.approx(dice_loss(up, gt.float().flatten(1), 1).item(), rel=1e-6)


def test_point_bce_value_at_zero_logits_is_log2_per_mask():
    # BCE(logit 0, y) = log 2 for any y (also for targets blurred by bilinear sampling), so
    # the loss is exactly (#masks · log 2) / num_masks whichever points are drawn.
    pred = torch.zeros(1, 3, 8, 8)
    gt = torch.rand(2, 32, 32) > 0.5
    crit = _criterion([([0, 2], [1, 0])], mask_loss="point_bce", num_points=50)
    out = crit.loss_masks({"pred_masks": pred}, [{"labels": torch.tensor([1, 2]), "masks": gt}],
                          crit.matcher(None, None), num_masks=4.0)
    assert out["loss_mask"].item() == pytest.approx(2 * math.log(2) / 4, rel=1e-6)
    assert 0 < out["loss_dice"].item() < 2 / 4


def test_point_bce_with_uniform_points_estimates_the_full_bce():
    torch.manual_seed(0)
    pred = torch.randn(1, 1, 16, 16) * 2
    gt = torch.zeros(1, 64, 64, dtype=torch.bool)
    gt[:, 8:40, 16:56] = True
    crit = _criterion([([0], [0])], mask_loss="point_bce", num_points=40000, importance_sample_ratio=0.0)
    out = crit.loss_masks({"pred_masks": pred}, [{"labels": torch.tensor([1]), "masks": gt}],
                          crit.matcher(None, None), num_masks=1.0)
    up = F.interpolate(pred[:, :1], size=(64, 64), mode="bilinear", align_corners=False)
    full = F.binary_cross_entropy_with_logits(up[0, 0], gt[0].float())
    assert out["loss_mask"].item() == pytest.approx(full.item(), rel=0.03)


def test_importance_sampling_prefers_uncertain_points():
    torch.manual_seed(0)
    # A ramp from -10 to 10 along x: certainty grows with the distance from x = 0.5.
    logits = torch.linspace(-10, 10, 64).expand(1, 1, 64, 64).contiguous()
    coords = get_uncertain_point_coords_with_randomness(
        logits, lambda v: -v.abs(), num_points=100, oversample_ratio=3, importance_sample_ratio=1.0
    )
    assert coords.shape == (1, 100, 2)
    values = point_sample(logits, coords, align_corners=False)
    uniform = point_sample(logits, torch.rand(1, 100, 2), align_corners=False)
    assert values.abs().mean() < 0.5 * uniform.abs().mean()
    with pytest.raises(FreeSegError, match="OVERSAMPLE_RATIO"):
        get_uncertain_point_coords_with_randomness(logits, lambda v: v, 10, 0.5, 0.75)


@pytest.mark.parametrize("mask_loss", ["focal_full", "point_bce"])
def test_forward_has_aux_keys_and_gradients(mask_loss):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, requires_grad=True)
    masks = torch.randn(2, 5, 8, 8, requires_grad=True)
    aux = [{"pred_logits": logits * 0.5, "pred_masks": masks * 0.5} for _ in range(2)]
    gt = [
        {"gt_classes": torch.tensor([0, 2]), "gt_masks": torch.rand(2, 28, 20) > 0.5},
        {"gt_classes": torch.tensor([1]), "gt_masks": torch.rand(1, 32, 32) > 0.5},
    ]
    targets = prepare_targets(gt, (32, 32))
    crit = SetCriterion(num_classes=3, matcher=HungarianMatcher(mask_cost="focal"), weight_dict={},
                        eos_coef=0.1, mask_loss=mask_loss, num_points=64)
    losses = crit({"pred_logits": logits, "pred_masks": masks, "aux_outputs": aux}, targets)
    names = {f"loss_{n}{s}" for n in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert set(losses) == names
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert logits.grad.abs().sum() > 0 and masks.grad.abs().sum() > 0


def test_batch_without_targets_gives_zero_mask_losses_with_gradient():
    masks = torch.randn(1, 4, 8, 8, requires_grad=True)
    crit = SetCriterion(num_classes=2, matcher=HungarianMatcher(), weight_dict={}, eos_coef=0.1)
    losses = crit({"pred_logits": torch.randn(1, 4, 3), "pred_masks": masks},
                  [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32)}])
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    assert losses["loss_ce"].item() > 0
    (losses["loss_mask"] + losses["loss_dice"]).backward()
    assert masks.grad is not None


def test_num_masks_is_clamped_to_one():
    empty = [{"labels": torch.zeros(0, dtype=torch.int64)}]
    assert SetCriterion.num_masks(empty, torch.device("cpu")) == 1.0
    assert SetCriterion.num_masks([{"labels": torch.arange(3)}] * 2, torch.device("cpu")) == 6.0


def test_apply_loss_weights_multiplies_and_drops_unweighted():
    losses = {"loss_ce": torch.tensor(2.0), "loss_ce_3": torch.tensor(5.0)}
    assert apply_loss_weights(losses, {"loss_ce": 3.0}) == {"loss_ce": torch.tensor(6.0)}


def test_empty_weight_buffer():
    crit = _criterion([], num_classes=4)
    assert crit.state_dict()["empty_weight"].tolist() == pytest.approx([1, 1, 1, 1, 0.1])


def test_bad_input_is_reported():
    crit = SetCriterion(num_classes=3, matcher=HungarianMatcher(), weight_dict={}, eos_coef=0.1)
    out = {"pred_logits": torch.randn(1, 4, 4), "pred_masks": torch.randn(1, 4, 8, 8)}
    with pytest.raises(FreeSegError, match="NUM_CLASSES"):
        crit({"pred_logits": torch.randn(1, 4, 6), "pred_masks": out["pred_masks"]},
             [{"labels": torch.tensor([0]), "masks": torch.ones(1, 8, 8)}])
    with pytest.raises(FreeSegError, match="label 255"):
        crit(out, [{"labels": torch.tensor([0, 255]), "masks": torch.ones(2, 8, 8)}])
    with pytest.raises(FreeSegError, match="one mask per label"):
        crit(out, [{"labels": torch.tensor([0, 1]), "masks": torch.ones(1, 8, 8)}])
    two = {"pred_logits": torch.randn(2, 4, 4), "pred_masks": torch.randn(2, 4, 8, 8)}
    with pytest.raises(FreeSegError, match="padded size"):
        crit(two, [{"labels": torch.tensor([0]), "masks": torch.ones(1, 8, 8)},
                   {"labels": torch.tensor([0]), "masks": torch.ones(1, 8, 9)}])
    with pytest.raises(FreeSegError, match="LOSS_TYPE"):
        SetCriterion(num_classes=3, matcher=HungarianMatcher(), weight_dict={}, eos_coef=0.1, mask_loss="l1")
    with pytest.raises(FreeSegError, match="larger than the padded batch"):
        prepare_targets([{"gt_classes": torch.tensor([0]), "gt_masks": torch.ones(1, 9, 4)}], (8, 8))
