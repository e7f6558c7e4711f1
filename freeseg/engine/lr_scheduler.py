"""Learning-rate schedules: tiny pure functions of the iteration, driven by ``LambdaLR``.

Every schedule is a multiplier ``m(it)`` of each param group's base LR, evaluated at the
iteration whose optimizer step is about to run (``it = 0`` for the first step). The values match
detectron2 (``WarmupCosineLR``, ``WarmupMultiStepLR`` through fvcore's param schedulers) and
Mask2Former (``WarmupPolyLR``), which FreeSeg's configs use:

- poly (Mask2Former): ``warm(it) * (1 - it / max_iter) ** power``, with ``constant_ending`` as
  a floor once warm-up is over; ``warm`` = ``warmup_factor`` (constant) or the line from
  ``warmup_factor`` to 1 (linear) during warm-up, 1 after;
- cosine and multi-step (detectron2/fvcore): during warm-up ``warmup_factor * m(0)`` (constant)
  or the line from there to ``m(warmup_iters)`` (linear); ``m(it)`` after;
- cosine: ``end + (1 - end) * (1 + cos(pi * it / max_iter)) / 2``, ``end = BASE_LR_END / BASE_LR``;
- multi-step: ``gamma ** (number of milestones <= it)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..utils.errors import ConfigError


def warmup_factor_at(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    """The warm-up multiplier (1 after warm-up) — detectron2's ``_get_warmup_factor_at_iter``."""
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = it / warmup_iters
        return warmup_factor * (1.0 - alpha) + alpha
    raise ConfigError(f"SOLVER.WARMUP_METHOD={method!r} is unknown; use 'linear' or 'constant'")


def poly_multiplier(it: int, max_iter: int, power: float, constant_ending: float = 0.0) -> float:
    """``(1 - it/max_iter) ** power``, held at ``constant_ending`` once it falls below it."""
    value = math.pow(max(1.0 - it / max_iter, 0.0), power)
    if constant_ending > 0 and value < constant_ending:
        return constant_ending
    return value


def cosine_multiplier(it: int, max_iter: int, end_value: float = 0.0) -> float:
    """Half-cosine from 1 at ``it = 0`` to ``end_value`` at ``it = max_iter``."""
    where = min(it / max_iter, 1.0)
    return end_value + 0.5 * (1.0 - end_value) * (1.0 + math.cos(math.pi * where))


def multistep_multiplier(it: int, milestones: tuple[int, ...], gamma: float) -> float:
    """``gamma ** k`` where ``k`` = number of milestones already reached (``<= it``)."""
    return gamma ** sum(1 for m in milestones if m <= it)


@dataclass
class WarmupSchedule:
    """A picklable LR multiplier: warm-up then one of ``poly`` / ``cosine`` / ``multistep``.

    It is a dataclass (not a closure) so ``LambdaLR.state_dict()`` stores its fields, which
    lets a resumed run notice that the schedule changed.
    """

    kind: str
    max_iter: int
    warmup_iters: int = 0
    warmup_factor: float = 1.0
    warmup_method: str = "linear"
    power: float = 0.9
    constant_ending: float = 0.0
    end_value: float = 0.0
    milestones: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in _SCHEDULES:
            raise ConfigError(
                f"SOLVER.LR_SCHEDULER_NAME={self.kind!r} is unknown; use one of {sorted(_NAMES)}"
            )
        if self.max_iter <= 0:
            raise ConfigError(f"SOLVER.MAX_ITER must be positive, got {self.max_iter}")
        warmup_factor_at(self.warmup_method, 0, 1, self.warmup_factor)  # validates the method

    def __call__(self, it: int) -> float:
        if self.kind == "poly":
            # Mask2Former's WarmupPolyLR: warm-up factor times the poly value; the constant
            # ending applies only once warm-up is over.
            warm = warmup_factor_at(self.warmup_method, it, self.warmup_iters, self.warmup_factor)
            ending = self.constant_ending if warm == 1.0 else 0.0
            return warm * poly_multiplier(it, self.max_iter, self.power, ending)
        if it < self.warmup_iters:
            # detectron2's WarmupParamScheduler (fvcore): constant ``factor * m(0)``, or a line
            # from ``factor * m(0)`` to ``m(warmup_iters)``.
            start = self.warmup_factor * self._main(0)
            if self.warmup_method == "constant":
                return start
            alpha = it / self.warmup_iters
            return start + (self._main(self.warmup_iters) - start) * alpha
        return self._main(it)

    def _main(self, it: int) -> float:
        if self.kind == "cosine":
            return cosine_multiplier(it, self.max_iter, self.end_value)
        return multistep_multiplier(it, self.milestones, self.gamma)


_SCHEDULES = ("poly", "cosine", "multistep")
# Config name -> schedule kind (detectron2 / Mask2Former names).
_NAMES: dict[str, str] = {
    "WarmupPolyLR": "poly",
    "WarmupCosineLR": "cosine",
    "WarmupMultiStepLR": "multistep",
}


def schedule_from_config(cfg: Any) -> WarmupSchedule:
    """Read ``SOLVER.*`` into a :class:`WarmupSchedule`."""
    s = cfg.SOLVER
    name = s.LR_SCHEDULER_NAME
    if name not in _NAMES:
        raise ConfigError(f"SOLVER.LR_SCHEDULER_NAME={name!r} is unknown; use one of {sorted(_NAMES)}")
    milestones = tuple(int(m) for m in s.STEPS if m <= s.MAX_ITER)
    end_value = float(getattr(s, "BASE_LR_END", 0.0) or 0.0) / s.BASE_LR if s.BASE_LR else 0.0
    return WarmupSchedule(
        kind=_NAMES[name],
        max_iter=int(s.MAX_ITER),
        warmup_iters=int(s.WARMUP_ITERS),
        warmup_factor=float(s.WARMUP_FACTOR),
        warmup_method=str(getattr(s, "WARMUP_METHOD", "linear")),
        power=float(getattr(s, "POLY_LR_POWER", 0.9)),
        constant_ending=float(getattr(s, "POLY_LR_CONSTANT_ENDING", 0.0)),
        end_value=end_value,
        milestones=milestones,
        gamma=float(s.GAMMA),
    )


def build_lr_scheduler(cfg: Any, optimizer: torch.optim.Optimizer) -> LambdaLR:
    """``LambdaLR`` over every param group; call ``.step()`` once after each optimizer step."""
    return make_scheduler(optimizer, schedule_from_config(cfg))


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]) -> LambdaLR:
    """Wrap a multiplier function; the LR of group g at iteration it = base_lr_g · schedule(it)."""
    return LambdaLR(optimizer, lr_lambda=schedule)
