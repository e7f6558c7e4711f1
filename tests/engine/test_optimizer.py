"""Parameter groups, optimizer choice and gradient clipping."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from freeseg.config import get_cfg
from freeseg.engine.optimizer import GradientClipper, build_grad_clipper, build_optimizer, get_param_groups
from freeseg.utils.errors import ConfigError

from .toy import ToySegmenter


def _group_of(groups, name):
    (group,) = [g for g in groups if name in g["names"]]
    return group


def test_param_groups_lr_and_weight_decay():
    model = ToySegmenter()
    groups = get_param_groups(model, base_lr=1.0, weight_decay=0.05, weight_decay_norm=0.0,
                              weight_decay_embed=0.01, backbone_multiplier=0.1)
    assert _group_of(groups, "backbone.0.weight")["lr"] == pytest.approx(0.1)
    assert _group_of(groups, "backbone.0.weight")["weight_decay"] == 0.05
    assert _group_of(groups, "backbone.1.weight") == _group_of(groups, "backbone.1.bias")
    assert _group_of(groups, "backbone.1.weight")["weight_decay"] == 0.0  # GroupNorm
    assert _group_of(groups, "backbone.1.weight")["lr"] == pytest.approx(0.1)
    assert _group_of(groups, "task_embed.weight")["weight_decay"] == 0.01  # nn.Embedding
    assert _group_of(groups, "head.1.weight")["lr"] == 1.0
    names = [n for g in groups for n in g["names"]]
    assert not any(n.startswith("frozen.") for n in names)  # frozen parameters left out
    assert len(names) == len(set(names)) == sum(p.requires_grad for p in model.parameters())


def test_shared_parameter_appears_once():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, lin)
    groups = get_param_groups(model, base_lr=1.0, weight_decay=0.0)
    assert sum(len(g["params"]) for g in groups) == 2


@pytest.mark.parametrize("name,cls", [("SGD", torch.optim.SGD), ("ADAMW", torch.optim.AdamW)])
def test_build_optimizer(name, cls):
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = name
    cfg.SOLVER.BASE_LR = 0.02
    opt = build_optimizer(cfg, ToySegmenter())
    assert isinstance(opt, cls)
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(0.02)


def test_bad_optimizer_name():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, ToySegmenter())


def _params_with_grads(grads):
    params = []
    for g in grads:
        p = nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        params.append(p)
    return params


def test_clip_full_model_norm():
    a, b = _params_with_grads([torch.tensor([3.0, 0.0]), torch.tensor([4.0])])
    total = GradientClipper("full_model", 1.0)([{"params": [a]}, {"params": [b]}])
    assert total.item() == pytest.approx(5.0)
    norm = torch.cat([a.grad, b.grad]).norm()
    assert norm.item() == pytest.approx(1.0, rel=1e-5)
    assert (a.grad[0] / b.grad[0]).item() == pytest.approx(0.75)


def test_clip_norm_per_group():
    a, b = _params_with_grads([torch.tensor([3.0, 4.0]), torch.tensor([0.5])])
    GradientClipper("norm", 1.0)([{"params": [a]}, {"params": [b]}])
    assert a.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    assert b.grad.item() == pytest.approx(0.5)  # under the limit: untouched


def test_clip_value():
    (a,) = _params_with_grads([torch.tensor([-3.0, 0.2, 7.0])])
    GradientClipper("value", 0.5)([{"params": [a]}])
    assert a.grad.tolist() == pytest.approx([-0.5, 0.2, 0.5])


def test_clipper_from_config():
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    assert build_grad_clipper(cfg) is None
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    clipper = build_grad_clipper(cfg)
    assert (clipper.clip_type, clipper.clip_value) == ("full_model", 0.01)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "agc"
    with pytest.raises(ConfigError, match="CLIP_TYPE"):
        build_grad_clipper(cfg)
