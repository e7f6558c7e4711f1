"""Normalisation layers with detectron2's names and behaviour.

``FrozenBatchNorm2d`` keeps detectron2's buffer names (``weight``, ``bias``, ``running_mean``,
``running_var``) so model-zoo checkpoints load unchanged, and ``get_norm`` maps the config
strings of ``MODEL.RESNETS.NORM`` / ``MODEL.SEM_SEG_HEAD.NORM`` to layers.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from freeseg.utils.errors import FreeSegError


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers, none trained).

    Two numerically slightly different paths, as in detectron2 (the golden fixtures depend on
    it): when the input requires grad (training) ``x * scale + shift`` with
    ``scale = weight * rsqrt(running_var + eps)``, so autograd needs no batch-norm kernel;
    otherwise ``F.batch_norm(training=False)``.

    Args:
        num_features: channels C of the [B, C, H, W] input.
        eps: added to the variance.
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            shift = self.bias - self.running_mean * scale
            return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )

    def _load_from_state_dict(
        self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool, *args: Any
    ) -> None:
        # BatchNorm2d checkpoints (torchvision, timm) carry a counter a frozen layer has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Return ``module`` with every BatchNorm2d/SyncBatchNorm (recursively) made frozen.

        The statistics and affine parameters are copied; a BatchNorm given directly is replaced
        by a new FrozenBatchNorm2d, which is returned.
        """
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, eps=module.eps)
            if module.affine:
                frozen.weight.data.copy_(module.weight.detach())
                frozen.bias.data.copy_(module.bias.detach())
            if module.running_mean is not None:
                frozen.running_mean.data.copy_(module.running_mean)
                frozen.running_var.data.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


def _group_norm(channels: int) -> nn.Module:
    # detectron2's "GN" is always 32 groups.
    return nn.GroupNorm(32, channels)


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "BN": nn.BatchNorm2d,
    # torch's SyncBatchNorm behaves as plain BN when no process group is initialised.
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": _group_norm,
}


def get_norm(norm: str | Callable[[int], nn.Module] | None, out_channels: int) -> nn.Module | None:
    """Normalisation layer for ``out_channels`` channels, by config name or callable.

    Args:
        norm: "" or None (no norm), "BN", "SyncBN", "FrozenBN", "GN" (32 groups), or a callable
            taking the channel count.
        out_channels: C of the [B, C, H, W] input.
    """
    if norm is None or norm == "":
        return None
    if isinstance(norm, str):
        if norm not in NORMS:
            raise FreeSegError(
                f"unknown norm {norm!r}; set the NORM config key to one of: '', {', '.join(NORMS)}"
            )
        norm = NORMS[norm]
    return norm(out_channels)
