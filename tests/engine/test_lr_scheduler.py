"""LR schedules: values at given iterations (detectron2 / Mask2Former semantics)."""
from __future__ import annotations

import math

import pytest
import torch

from freeseg.config import get_cfg
from freeseg.engine.lr_scheduler import WarmupSchedule, build_lr_scheduler, schedule_from_config
from freeseg.utils.errors import ConfigError


def test_poly_with_linear_warmup_and_constant_ending():
    s = WarmupSchedule("poly", max_iter=100, warmup_iters=10, warmup_factor=0.1, power=0.9,
                       constant_ending=0.2)
    assert s(0) == pytest.approx(0.1)
    assert s(5) == pytest.approx((0.1 * 0.5 + 0.5) * 0.95**0.9)
    assert s(10) == pytest.approx(0.9**0.9)
    assert s(50) == pytest.approx(0.5**0.9)
    assert s(99) == pytest.approx(0.2)  # 0.01**0.9 < 0.2: held at the constant ending


def test_poly_constant_ending_not_applied_during_warmup():
    s = WarmupSchedule("poly", max_iter=10, warmup_iters=10, warmup_factor=0.5,
                       warmup_method="constant", constant_ending=0.9)
    assert s(5) == pytest.approx(0.5 * 0.5**0.9)


def test_cosine_freeseg_stage1_constant_warmup():
    # FreeSeg stage 1: WarmupCosineLR, constant warm-up of 100 iterations at 0.005, 16k iterations.
    s = WarmupSchedule("cosine", max_iter=16000, warmup_iters=100, warmup_factor=0.005,
                       warmup_method="constant")
    assert s(0) == pytest.approx(0.005)
    assert s(99) == pytest.approx(0.005)
    assert s(100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 100 / 16000)))
    assert s(8000) == pytest.approx(0.5)
    assert s(16000) == pytest.approx(0.0, abs=1e-12)


def test_cosine_linear_warmup_ends_on_the_curve():
    s = WarmupSchedule("cosine", max_iter=100, warmup_iters=10, warmup_factor=0.1, end_value=0.2)
    at10 = 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.1))
    assert s(0) == pytest.approx(0.1)
    assert s(5) == pytest.approx(0.1 + (at10 - 0.1) * 0.5)
    assert s(10) == pytest.approx(at10)
    assert s(100) == pytest.approx(0.2)


def test_multistep():
    s = WarmupSchedule("multistep", max_iter=100, milestones=(30, 60), gamma=0.1)
    assert [s(i) for i in (0, 29, 30, 59, 60, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_scheduler_drives_every_group_from_config():
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.MAX_ITER = 20
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.POLY_LR_POWER = 1.0
    w = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(5):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.75, 0.075])
    # The schedule travels in the state dict (a dataclass, not a closure).
    assert sched.state_dict()["lr_lambdas"][0]["max_iter"] == 20


def test_config_steps_beyond_max_iter_are_dropped():
    cfg = get_cfg()
    cfg.SOLVER.MAX_ITER = 100
    cfg.SOLVER.STEPS = (50, 500)
    assert schedule_from_config(cfg).milestones == (50,)


@pytest.mark.parametrize("key,value", [("LR_SCHEDULER_NAME", "StepLR"), ("WARMUP_METHOD", "exp"), ("MAX_ITER", 0)])
def test_bad_schedule_config(key, value):
    cfg = get_cfg()
    cfg.SOLVER[key] = value
    with pytest.raises(ConfigError, match=f"SOLVER.{key}"):
        schedule_from_config(cfg)
