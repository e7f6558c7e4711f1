"""build_criterion: FreeSeg's weight dict from its config, the fixed variant, the point variant."""
from __future__ import annotations

import pytest
import torch

from freeseg.config import get_cfg
from freeseg.losses import build_criterion, build_weight_dict
from freeseg.utils.errors import FreeSegError
from tests.conftest import load_pt


@pytest.fixture()
def fixture_cfg(fixture_a):
    cfg = get_cfg()
    cfg.merge_from_file(str(fixture_a / "config.yaml"))
    return cfg


def test_reference_weight_dict_equals_fixture(fixture_a, fixture_cfg):
    step = load_pt(fixture_a / "train_step.pt")
    criterion = build_criterion(fixture_cfg)
    assert criterion.weight_dict == pytest.approx(step["weight_dict"])
    assert set(criterion.weight_dict) == set(step["weight_dict"])
    assert criterion.eos_coef == step["eos_coef"]
    assert criterion.mask_loss == "focal_full" and criterion.matcher.mask_cost == "focal"
    assert (criterion.matcher.cost_class, criterion.matcher.cost_mask, criterion.matcher.cost_dice) == (1.0, 20.0, 5.0)
    state = load_pt(fixture_a / "model_final.pth")["model"]
    assert torch.equal(criterion.state_dict()["empty_weight"], state["criterion.empty_weight"])


def test_reference_ignores_class_weight(fixture_cfg):
    fixture_cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 2.0
    criterion = build_criterion(fixture_cfg)
    assert criterion.weight_dict["loss_ce"] == 1.0 and criterion.matcher.cost_class == 1.0


def test_fixed_weights_use_class_weight_and_every_aux_output(fixture_cfg):
    mf = fixture_cfg.MODEL.MASK_FORMER
    mf.CLASS_WEIGHT = 2.0
    mf.FIXED_LOSS_WEIGHTS = True
    criterion = build_criterion(fixture_cfg)
    assert criterion.matcher.cost_class == 2.0
    assert criterion.weight_dict["loss_ce"] == 2.0 and criterion.weight_dict["loss_ce_3"] == 2.0
    assert f"loss_dice_{mf.DEC_LAYERS}" not in criterion.weight_dict
    assert len(criterion.weight_dict) == 3 * (1 + mf.DEC_LAYERS)


def test_point_bce_selects_point_matcher_and_sampling(fixture_cfg):
    mf = fixture_cfg.MODEL.MASK_FORMER
    mf.LOSS_TYPE = "point_bce"
    criterion = build_criterion(fixture_cfg)
    assert criterion.mask_loss == "point_bce" and criterion.matcher.mask_cost == "point_bce"
    assert criterion.num_points == mf.TRAIN_NUM_POINTS == criterion.matcher.num_points
    assert (criterion.oversample_ratio, criterion.importance_sample_ratio) == (3.0, 0.75)


def test_defaults_build_and_bad_loss_type():
    cfg = get_cfg()
    assert build_criterion(cfg).mask_loss == "focal_full"
    cfg.MODEL.MASK_FORMER.LOSS_TYPE = "focal"
    with pytest.raises(FreeSegError, match="LOSS_TYPE"):
        build_criterion(cfg)


def test_weight_dict_without_deep_supervision():
    wd = build_weight_dict(class_weight=1, mask_weight=20, dice_weight=5, deep_supervision=False, num_aux=9)
    assert wd == {"loss_ce": 1, "loss_mask": 20, "loss_dice": 5}
