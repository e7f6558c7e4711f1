"""Optimizer and gradient clipping, as Mask2Former / FreeSeg build them.

Parameter groups (Mask2Former's ``build_optimizer``, which FreeSeg copies):
- parameters under a module whose name contains ``backbone``: LR × ``BACKBONE_MULTIPLIER``;
- parameters of normalisation layers: weight decay ``WEIGHT_DECAY_NORM``;
- parameters of ``nn.Embedding`` layers: weight decay ``WEIGHT_DECAY_EMBED``;
- ``relative_position_bias_table`` / ``absolute_pos_embed`` (Swin): weight decay 0;
- frozen parameters (CLIP, loaded prompts, frozen backbone stages) are left out.
Like Mask2Former we ignore detectron2's ``BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS``. Unlike it,
parameters with equal hyper-parameters share one group (same maths, fewer groups, faster
``foreach`` kernels).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import torch
from torch import nn

from ..utils.errors import ConfigError

logger = logging.getLogger(__name__)

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def _is_norm(module: nn.Module) -> bool:
    # Norm layers from timm/open_clip that do not subclass torch's (e.g. RMSNorm variants,
    # FrozenBatchNorm with affine params) are recognised by their class name.
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith(("Norm", "Norm2d"))


def get_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    backbone_multiplier: float = 1.0,
) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` grouped by ``(lr, weight_decay)``.

    Returns ``[{"params": [Tensor, ...], "lr": float, "weight_decay": float, "names": [str]}]``
    in first-seen order; ``names`` is informational (optimizers ignore extra keys).
    """
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr, wd = base_lr, weight_decay
            if "backbone" in module_name:
                lr = base_lr * backbone_multiplier
            if "relative_position_bias_table" in param_name or "absolute_pos_embed" in param_name:
                wd = 0.0
            if _is_norm(module):
                wd = weight_decay_norm
            if isinstance(module, nn.Embedding):
                wd = weight_decay_embed
            group = groups.setdefault((lr, wd), {"params": [], "lr": lr, "weight_decay": wd, "names": []})
            group["params"].append(param)
            group["names"].append(f"{module_name}.{param_name}" if module_name else param_name)
    return list(groups.values())


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` (``SGD`` or ``ADAMW``) over :func:`get_param_groups`."""
    s = cfg.SOLVER
    groups = get_param_groups(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        weight_decay_embed=s.WEIGHT_DECAY_EMBED,
        backbone_multiplier=s.BACKBONE_MULTIPLIER,
    )
    if not groups:
        raise ConfigError(
            f"{cfg.MODEL.META_ARCHITECTURE} has no trainable parameters; "
            "check which parts the config freezes"
        )
    n_params = sum(p.numel() for g in groups for p in g["params"])
    logger.info("optimizer %s: %d trainable tensors (%.2fM values) in %d groups",
                s.OPTIMIZER, sum(len(g["params"]) for g in groups), n_params / 1e6, len(groups))
    name = str(s.OPTIMIZER).upper()
    if name == "SGD":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV)
    if name == "ADAMW":
        return torch.optim.AdamW(groups, lr=s.BASE_LR)
    raise ConfigError(f"SOLVER.OPTIMIZER={s.OPTIMIZER!r} is unknown; use 'SGD' or 'ADAMW'")


class GradientClipper:
    """Clips gradients before ``optimizer.step()``; returns the total norm where it computes one.

    ``clip_type``: ``full_model`` (Mask2Former: one norm over all parameters), ``norm``
    (detectron2: the norm of each param group separately) or ``value`` (element-wise clamp).
    """

    def __init__(self, clip_type: str, clip_value: float, norm_type: float = 2.0) -> None:
        if clip_type not in ("full_model", "norm", "value"):
            raise ConfigError(
                f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip_type!r} is unknown; "
                "use 'full_model', 'norm' or 'value'"
            )
        if clip_value <= 0:
            raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0, got {clip_value}")
        self.clip_type, self.clip_value, self.norm_type = clip_type, clip_value, norm_type

    def __call__(self, param_groups: Iterable[dict[str, Any]]) -> torch.Tensor | None:
        groups = [[p for p in g["params"] if p.grad is not None] for g in param_groups]
        if self.clip_type == "full_model":
            params = [p for g in groups for p in g]
            return torch.nn.utils.clip_grad_norm_(params, self.clip_value, self.norm_type)
        if self.clip_type == "norm":
            for params in groups:
                torch.nn.utils.clip_grad_norm_(params, self.clip_value, self.norm_type)
            return None
        for params in groups:
            torch.nn.utils.clip_grad_value_(params, self.clip_value)
        return None


def build_grad_clipper(cfg: Any) -> GradientClipper | None:
    """A :class:`GradientClipper` from ``SOLVER.CLIP_GRADIENTS``, or None when disabled."""
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return None
    return GradientClipper(str(c.CLIP_TYPE), float(c.CLIP_VALUE), float(c.NORM_TYPE))
