"""Backbone checkpoint conversion to detectron2 names, and a strict loader with clear errors.

``convert_to_d2_backbone`` accepts the state dicts people actually have for ResNets:
- detectron2 model-zoo Caffe2 pickles (MSRA ``R-50.pkl``: ``conv1_w``, ``res_conv1_bn_s``,
  ``res2_0_branch2a_w``, ``res2_0_branch2a_bn_s``, ...), numpy arrays, maybe under ``blobs``;
- detectron2-named pickles (``DeepLab/R-103.pkl``: ``stem.conv1.weight``, ...), maybe under
  ``model`` and with a ``backbone.`` prefix;
- torchvision and timm ResNets (``conv1``, ``bn1``, ``layer1.0.downsample.0``, ...), including
  timm's three-conv "deep" stem (``conv1.0`` / ``conv1.3`` / ``conv1.6``), which maps onto the
  DeepLab stem;
- original Swin / Mask2Former D2SwinTransformer checkpoints (``patch_embed.proj``,
  ``layers.0.blocks.0.attn.qkv``, ``layers.0.downsample``, ``norm0``), for the timm-based
  ``D2SwinTransformer`` backbone.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from freeseg.utils.errors import FreeSegError

_CLASSIFIER = re.compile(r"^(fc1000|fc|linear|head\.fc|pred)[._]")


def _unwrap(state: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("model", "state_dict", "blobs"):
        inner = state.get(key)
        if isinstance(inner, Mapping) and inner:
            return _unwrap(inner)
    return state


def _to_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return None  # metadata such as "__author__"


def _caffe2_name(name: str) -> str:
    """MSRA Caffe2 blob name -> detectron2 name (detectron2's own renaming rules)."""
    name = name.replace("_", ".")
    for old, new in ((".bn.s", ".norm.weight"), (".bn.b", ".norm.bias"), (".bn.rm", ".norm.running_mean"),
                     (".bn.riv", ".norm.running_var")):
        if name.endswith(old):
            name = name[: -len(old)] + new
    if name.endswith(".w"):
        name = name[:-2] + ".weight"
    elif name.endswith(".b"):
        name = name[:-2] + ".bias"
    name = re.sub(r"^res\.conv1\.norm\.", "conv1.norm.", name)
    name = re.sub(r"^conv1\.", "stem.conv1.", name)
    for old, new in ((".branch1.", ".shortcut."), (".branch2a.", ".conv1."), (".branch2b.", ".conv2."),
                     (".branch2c.", ".conv3.")):
        name = name.replace(old, new)
    return name


_TV_STEM = {
    "conv1.": "stem.conv1.",
    "bn1.": "stem.conv1.norm.",
    # timm deep stem (resnet*d / *s): conv-bn-act x3 in a Sequential named conv1, last bn is bn1.
    "conv1.0.": "stem.conv1.",
    "conv1.1.": "stem.conv1.norm.",
    "conv1.3.": "stem.conv2.",
    "conv1.4.": "stem.conv2.norm.",
    "conv1.6.": "stem.conv3.",
}


def _torchvision_name(name: str, deep_stem: bool) -> str:
    """torchvision / timm ResNet name -> detectron2 name."""
    m = re.match(r"^layer(\d)\.(\d+)\.(.*)$", name)
    if m:
        stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
        rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
        rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
        return f"res{stage}.{block}.{rest}"
    if deep_stem and name.startswith("bn1."):
        return "stem.conv3.norm." + name[len("bn1."):]
    for old in sorted(_TV_STEM, key=len, reverse=True):
        if name.startswith(old):
            return _TV_STEM[old] + name[len(old):]
    return name


def _swin_name(name: str) -> str | None:
    """Original / D2 Swin name -> our TimmBackbone name (None = not a backbone weight)."""
    name = re.sub(r"^backbone\.", "", name)
    if re.match(r"^norm\d\.", name):  # D2SwinTransformer's per-output norms
        return name
    if name.startswith(("head.", "norm.")) or "relative_position_index" in name or "attn_mask" in name:
        return None  # classifier, classifier norm, and buffers timm recomputes
    # the original merges patches at the end of stage i, timm at the start of stage i + 1
    name = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", name)
    return "model." + re.sub(r"^layers\.(\d+)\.", r"layers_\1.", name)


def convert_to_d2_backbone(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Backbone weights in any supported ResNet layout -> {detectron2 name: tensor}.

    Names have no ``backbone.`` prefix; classifier weights and ``num_batches_tracked`` are
    dropped; numpy arrays become tensors. Caffe2 FrozenBN blobs carry only scale and shift, so
    running statistics are filled with mean 0 / var 1, exactly what detectron2 does on load.
    Raises FreeSegError when the layout is not recognised.
    """
    state = _unwrap(state)
    tensors = {k: t for k, v in state.items() if (t := _to_tensor(v)) is not None}
    keys = set(tensors)
    if any(k.endswith("_branch2a_w") or k in ("conv1_w", "res_conv1_bn_s") for k in keys):
        out = {_caffe2_name(k): v for k, v in tensors.items() if not _CLASSIFIER.match(k)}
        for name in [k for k in out if k.endswith(".norm.weight")]:
            prefix = name[: -len("weight")]
            out.setdefault(prefix + "running_mean", torch.zeros_like(out[name]))
            out.setdefault(prefix + "running_var", torch.ones_like(out[name]))
    elif any(re.match(r"^layer\d\.\d+\.conv1\.weight$", k) for k in keys):
        if any(re.match(r"^layer\d\.\d+\.downsample\.2\.", k) for k in keys):
            raise FreeSegError(
                "ResNet-D average-pool shortcuts (timm resnet*d) have no detectron2 equivalent; use a timm backbone instead"
            )
        deep = "conv1.0.weight" in keys
        out = {_torchvision_name(k, deep): v for k, v in tensors.items() if not _CLASSIFIER.match(k)}
    elif any(re.match(r"^(backbone\.)?layers\.0\.blocks\.0\.attn\.qkv\.weight$", k) for k in keys):
        out = {n: v for k, v in tensors.items() if (n := _swin_name(k)) is not None}
    elif any(k.startswith(("stem.", "backbone.stem.", "backbone.bottom_up.stem.")) for k in keys):
        out = {re.sub(r"^backbone\.(bottom_up\.)?", "", k): v for k, v in tensors.items()
               if k.startswith(("stem.", "res", "backbone.")) and not _CLASSIFIER.match(k)}
        out = {k: v for k, v in out.items() if k.startswith(("stem.", "res"))}
    else:
        sample = ", ".join(sorted(keys)[:3])
        raise FreeSegError(
            f"backbone checkpoint layout not recognised (first keys: {sample}); expected detectron2, "
            "Caffe2 (R-50.pkl), torchvision or timm ResNet weights, or original/D2 Swin weights"
        )
    return {k: v for k, v in out.items() if not k.endswith("num_batches_tracked")}


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Load ``state`` into ``module``, requiring the same names and shapes for every entry.

    Raises FreeSegError naming the missing, unexpected and shape-mismatched keys (first few of
    each) instead of torch's multi-line RuntimeError.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise FreeSegError(
            f"{what} does not match {type(module).__name__}: {'; '.join(parts)}. "
            "Check that the config (depth, widths, layers) matches the weights"
        )
    module.load_state_dict(dict(state), strict=True)
