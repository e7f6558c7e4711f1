"""``build_model(cfg)``: the meta-architecture named by ``MODEL.META_ARCHITECTURE``, on ``MODEL.DEVICE``."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..utils.errors import FreeSegError, closest
from .meta_arch import OpenVocabulary, ProposalClipClassifier

META_ARCHITECTURES: dict[str, Callable[[Any], nn.Module]] = {
    "OpenVocabulary": OpenVocabulary.from_config,
    "ProposalClipClassifier": ProposalClipClassifier.from_config,
}


def build_model(cfg: Any) -> nn.Module:
    """Build the model; no data set needs to be registered (names come from ``set_vocabulary``)."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in META_ARCHITECTURES:
        hint = closest(name, META_ARCHITECTURES)
        raise FreeSegError(
            f"unknown MODEL.META_ARCHITECTURE {name!r}"
            + (f"; did you mean {hint!r}?" if hint else f"; use one of {sorted(META_ARCHITECTURES)}")
        )
    model = META_ARCHITECTURES[name](cfg)
    return model.to(torch.device(cfg.MODEL.DEVICE))
