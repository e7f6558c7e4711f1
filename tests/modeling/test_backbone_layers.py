"""Small layers: FrozenBatchNorm2d, get_norm, Conv2d wrapper, sine position encoding, MLP."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from freeseg.layers import MLP, Conv2d, FrozenBatchNorm2d, PositionEmbeddingSine, get_norm
from freeseg.utils.errors import FreeSegError


def _random_bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return bn.eval()


def test_frozen_bn_matches_batchnorm_eval_on_both_paths() -> None:
    torch.manual_seed(0)
    bn = _random_bn(6)
    frozen = FrozenBatchNorm2d(6)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped silently
    x = torch.randn(2, 6, 5, 7)
    expected = bn(x)
    assert torch.equal(frozen(x), F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, 1e-5))
    torch.testing.assert_close(frozen(x), expected, atol=1e-6, rtol=0)
    x_grad = x.clone().requires_grad_(True)
    out = frozen(x_grad)  # the x * scale + shift path
    torch.testing.assert_close(out, expected.detach(), atol=1e-5, rtol=0)
    out.sum().backward()
    scale = bn.weight / (bn.running_var + 1e-5).sqrt()
    torch.testing.assert_close(x_grad.grad, scale.view(1, -1, 1, 1).expand_as(x), atol=1e-6, rtol=0)
    assert not any(True for _ in frozen.parameters())  # nothing to train


def test_convert_frozen_batchnorm_copies_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _random_bn(4))
    x = torch.randn(1, 3, 4, 4)
    expected = model(x)
    converted = FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert isinstance(converted[1], FrozenBatchNorm2d)
    torch.testing.assert_close(converted(x), expected, atol=1e-6, rtol=0)


def test_get_norm_names() -> None:
    assert get_norm("", 8) is None and get_norm(None, 8) is None
    assert isinstance(get_norm("BN", 8), nn.BatchNorm2d)
    assert isinstance(get_norm("SyncBN", 8), nn.SyncBatchNorm)
    assert isinstance(get_norm("FrozenBN", 8), FrozenBatchNorm2d)
    gn = get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32 and gn.num_channels == 64
    assert isinstance(get_norm(lambda c: nn.LayerNorm(c), 8), nn.LayerNorm)
    with pytest.raises(FreeSegError, match="unknown norm 'bn'.*FrozenBN"):
        get_norm("bn", 8)


def test_conv2d_applies_norm_then_activation_with_d2_names() -> None:
    torch.manual_seed(0)
    conv = Conv2d(3, 4, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(4), activation=F.relu)
    with torch.no_grad():
        conv.norm.bias.fill_(-0.5)
    x = torch.randn(1, 3, 6, 6)
    expected = F.relu(F.conv2d(x, conv.weight, padding=1) - 0.5)  # running_var + eps == 1
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=0)
    assert set(conv.state_dict()) == {"weight", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var"}


def test_position_embedding_sine_values() -> None:
    pe = PositionEmbeddingSine(4, normalize=True)
    out = pe(torch.zeros(2, 7, 3, 5))
    assert out.shape == (2, 8, 3, 5)
    # channel 0 = sin(normalised y / 10000^0), channel 1 = cos(y / 10000^(2*0/4)), x starts at channel 4
    y = torch.arange(1, 4, dtype=torch.float32) / (3 + 1e-6) * 2 * math.pi
    x = torch.arange(1, 6, dtype=torch.float32) / (5 + 1e-6) * 2 * math.pi
    torch.testing.assert_close(out[0, 0, :, 0], y.sin())
    torch.testing.assert_close(out[1, 1, :, 2], y.cos())
    torch.testing.assert_close(out[0, 4, 1, :], x.sin())
    torch.testing.assert_close(out[0, 6, 2, :], (x / 100).sin())  # pair 1: temperature ** (2 / 4)
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    mask[:, :, 3:] = True  # padding is not counted: x normalised over the 3 valid columns
    torch.testing.assert_close(pe(torch.zeros(1, 7, 3, 5), mask)[0, 4, 0, 2], torch.tensor(2 * math.pi / (1 + 1e-6 / 3)).sin())
    with pytest.raises(ValueError):
        PositionEmbeddingSine(4, normalize=False, scale=1.0)


def test_mlp_layers_and_relu() -> None:
    mlp = MLP(3, 5, 2, 3)
    assert [tuple(l.weight.shape) for l in mlp.layers] == [(5, 3), (5, 5), (2, 5)]
    with torch.no_grad():
        for layer in mlp.layers:
            layer.weight.fill_(1.0)
            layer.bias.fill_(0.0)
        mlp.layers[-1].bias.fill_(-100.0)
    # hidden ReLU clips negatives; no ReLU after the last layer keeps -100 + ...
    out = mlp(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[-100.0, -100.0], [-75.0, -75.0]]))
    with pytest.raises(ValueError):
        MLP(3, 5, 2, 0)
