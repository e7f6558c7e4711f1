"""Loading model weights from any of the files users have: :func:`load_checkpoint`.

Formats, recognised by content (not by name):
- our checkpoints and FreeSeg/detectron2 ``.pth`` files: ``{"model": state_dict, ...}``;
- detectron2 model-zoo ``.pkl`` pickles: ``{"model": {name: ndarray}, "__author__": ...}`` or a
  bare ``{name: ndarray}``, with Caffe2 (``res2_0_branch2a_w``) or detectron2 names;
- torchvision / timm backbone state dicts (``.pth``, ``.bin``, ``.safetensors``, or
  ``{"state_dict": ...}``).
When no key of the file names a key of the model, the file is a backbone: its names are
converted by ``freeseg.modeling.backbone.weights.convert_to_d2_backbone`` and put under
``backbone.``.

Remote names are never downloaded (this project runs offline): ``detectron2://X`` and
``https://host/.../X`` are looked up under ``$FREESEG_WEIGHTS`` (default ``weights/``) as
``X`` (``detectron2://DeepLab/R-103.pkl`` → ``weights/DeepLab/R-103.pkl``).

Before ``load_state_dict``, every submodule that defines
``prepare_for_state_dict(state_dict)`` gets the entries under its own prefix (prefix
stripped, as its own ``load_state_dict`` would see them), so that it can rebuild itself to the
checkpoint's shapes (the CLIP adapter rebuilds its CLIP to the checkpoint's architecture).
Shape mismatches that remain are an error listing the keys, never skipped.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from collections import defaultdict
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from ..utils.errors import FreeSegError

logger = logging.getLogger(__name__)

_D2_URL_PREFIXES = ("https://dl.fbaipublicfiles.com/detectron2/", "http://dl.fbaipublicfiles.com/detectron2/")


def weights_root() -> str:
    return os.environ.get("FREESEG_WEIGHTS", "weights")


def resolve_weights_path(path: str) -> str:
    """Map ``detectron2://`` / ``http(s)://`` names to a local file; error if it is absent."""
    relative = _zoo_name(path)
    if relative is None and path.startswith(("http://", "https://")):
        relative = urlparse(path).path.lstrip("/")
    if relative is None:
        if not os.path.isfile(path):
            raise FreeSegError(
                f"weights file not found: {path}; check MODEL.WEIGHTS (a local .pth/.pkl path)"
            )
        return path
    local = os.path.join(weights_root(), relative)
    if os.path.isfile(local):
        return local
    flat = os.path.join(weights_root(), os.path.basename(relative))
    if os.path.isfile(flat):
        return flat
    raise FreeSegError(
        f"weights {path} are not available offline: download them and put the file at {local} "
        f"(or set $FREESEG_WEIGHTS to the folder that holds {relative})"
    )


# Model-zoo folders of the ImageNet backbones that FreeSeg's configs start training from.
_BACKBONE_ZOO_FOLDERS = ("ImageNetPretrained/", "DeepLab/")
_TRAINED_MODEL_FIX = "add 'MODEL.WEIGHTS path/to/model_final.pth' (a FreeSeg or freeseg checkpoint; README, 'Where weights go')"


def _zoo_name(path: str) -> str | None:
    """``X`` of ``detectron2://X`` or of a detectron2 model-zoo URL; None for other names."""
    if path.startswith("detectron2://"):
        return path[len("detectron2://"):]
    if path.startswith(_D2_URL_PREFIXES):
        return path.split("/detectron2/", 1)[1]
    return None


def trained_weights_path(cfg: Any, use: str) -> str:
    """The local file of the trained model that ``cfg.MODEL.WEIGHTS`` names, for ``use``
    ("--eval-only", "the demo"): an error when it is unset, or when it still names the ImageNet
    backbone that the config's training starts from (evaluating that would mean a randomly
    initialised head), or when the file is absent."""
    path = str(cfg.MODEL.WEIGHTS)
    if not path:
        raise FreeSegError(f"{use} needs a trained model: {_TRAINED_MODEL_FIX}")
    zoo = _zoo_name(path)
    if zoo is not None and zoo.startswith(_BACKBONE_ZOO_FOLDERS):
        raise FreeSegError(
            f"MODEL.WEIGHTS is {path}, the ImageNet backbone that the config's training starts from, "
            f"not a trained model; {use} needs one: {_TRAINED_MODEL_FIX}"
        )
    return resolve_weights_path(path)


class UnreadableWeightsError(FreeSegError):
    """A weights file that is there but cannot be read: empty, cut short, damaged, or no weights
    file at all. ``problem`` is the message without its fix, for callers that know a better fix
    (``--resume`` with an older checkpoint at hand)."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        super().__init__(f"{path} {problem}; {fix}")
        self.problem = problem


_COPY_AGAIN = "copy or download it again"


def read_weights_file(path: str) -> dict[str, Any]:
    """The raw object stored in ``path`` (a dict), read without executing code.

    Raises :class:`UnreadableWeightsError` for an empty, cut-short or damaged file or one that is
    no weights file (an image, text), and :class:`FreeSegError` for other contents.
    """
    if not os.access(path, os.R_OK):
        raise FreeSegError(f"{path} cannot be read (permission denied); make it readable to this user")
    if os.path.getsize(path) == 0:
        raise UnreadableWeightsError(path, "is empty (0 bytes)", _COPY_AGAIN)
    try:
        obj = _load_weights_object(path)
    except FreeSegError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file raises anything from EOFError to KeyError
        raise _unreadable(path, e) from None
    if not isinstance(obj, dict):
        raise FreeSegError(f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
    return obj


def _load_weights_object(path: str) -> Any:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if path.endswith(".pkl"):
        # detectron2 model-zoo pickles hold only numpy arrays and builtins; latin1 for the
        # Python-2 era Caffe2 files.
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="latin1").load()
    return torch.load(path, map_location="cpu", weights_only=True)


def _unreadable(path: str, error: Exception) -> FreeSegError:
    """The one-line error for a file that exists but failed to load with ``error``."""
    with open(path, "rb") as f:
        looks_like = _not_weights(f.read(16))
    if looks_like:
        return UnreadableWeightsError(path, f"is not a weights file ({looks_like})",
                                      "give a .pth, .pkl or .safetensors checkpoint")
    # PyTorch's weights_only message is mostly advice to load with weights_only=False; the cause
    # is on the line after "WeightsUnpickler error:".
    cause = str(error).split("WeightsUnpickler error:")[-1].strip()
    cause = cause.splitlines()[0].split(". ")[0] if cause else ""
    unsupported = re.match(r"Unsupported global: GLOBAL (\S+)", cause)
    if unsupported:  # a complete pickle with classes in it
        return FreeSegError(
            f"{path} holds objects other than tensors and builtins ({unsupported.group(1)}) and was "
            "not loaded (weights_only); re-save its state dict with torch.save"
        )
    reason = f"{type(error).__name__}: {cause}" if cause else type(error).__name__
    return UnreadableWeightsError(path, f"is truncated or damaged ({reason})", _COPY_AGAIN)


def _not_weights(head: bytes) -> str:
    """What a file that starts with ``head`` is instead of weights, or "" when it may be weights
    (a PyTorch zip, a pickle, or safetensors: an 8-byte header length, then a JSON header)."""
    if head.startswith((b"PK\x03\x04", b"\x80")) or head[8:9] == b"{":
        return ""
    for magic, kind in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image")):
        if head.startswith(magic):
            return f"it is {kind}"
    if all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return "it is text"
    return "its first bytes are no PyTorch, pickle or safetensors format"


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtins only (no arbitrary code from a weights file)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise FreeSegError(f"weights pickle refers to {module}.{name}; only numpy arrays are allowed")


def extract_state_dict(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` mapping inside a checkpoint object (numpy arrays converted)."""
    for key in ("model", "state_dict", "model_state", "blobs"):  # blobs: Caffe2 pickles
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state: dict[str, torch.Tensor] = {}
    for name, value in obj.items():
        if name.endswith("_momentum"):  # Caffe2 solver state, not weights
            continue
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, torch.Tensor):
            state[name] = value
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def to_model_names(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Return ``state`` named as ``model`` names it: as is, or converted as a backbone."""
    model_keys = set(model.state_dict())
    if not state or any(k in model_keys for k in state):
        return state
    if not hasattr(model, "backbone"):
        return state  # nothing to map to; every key will be reported unexpected
    from ..modeling.backbone.weights import convert_to_d2_backbone

    converted = convert_to_d2_backbone(state)
    logger.info("weights look like a backbone: %d tensors converted to backbone.* names", len(converted))
    return {f"backbone.{k}": v for k, v in converted.items()}


def _prepare_modules(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, module in model.named_modules():
        hook = getattr(module, "prepare_for_state_dict", None)
        if not callable(hook):
            continue
        prefix = f"{name}." if name else ""
        hook({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def _summarise(keys: list[str], limit: int = 8) -> str:
    """``a.b.{x, y}``-style grouping so a list of hundreds of keys stays readable."""
    groups: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        head, _, tail = k.rpartition(".")
        groups[head].append(tail)
    parts = [f"{h}.{{{', '.join(t)}}}" if len(t) > 1 else f"{h}.{t[0]}" if h else t[0]
             for h, t in groups.items()]
    more = f" ... and {len(parts) - limit} more groups" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


def load_state_dict_checked(
    model: nn.Module, state: dict[str, torch.Tensor], source: str
) -> tuple[list[str], list[str]]:
    """``load_state_dict(strict=False)`` after the prepare hooks, refusing shape mismatches."""
    _prepare_modules(model, state)
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        shown = ", ".join(bad[:6]) + (f" ... ({len(bad)} keys)" if len(bad) > 6 else "")
        raise FreeSegError(
            f"checkpoint {source} does not match the model: shapes differ for {shown}; "
            "use the config the checkpoint was trained with"
        )
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing:
        logger.warning("%d model keys not in %s: %s", len(missing), source, _summarise(missing))
    if unexpected:
        logger.warning("%d keys of %s not in the model: %s", len(unexpected), source, _summarise(unexpected))
    logger.info("loaded %d tensors from %s", len(state) - len(unexpected), source)
    return missing, unexpected


def load_checkpoint(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load weights from ``path`` (any format above) into ``model``.

    Returns ``(missing, unexpected)``: model keys the file lacks, and file keys the model
    lacks (both also logged). Raises :class:`FreeSegError` for a missing file, an unreadable
    format or a shape mismatch.
    """
    while isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model._orig_mod
    local = resolve_weights_path(path)
    state = to_model_names(extract_state_dict(read_weights_file(local)), model)
    if not state:
        raise FreeSegError(f"{local} holds no tensors; point MODEL.WEIGHTS at a model checkpoint")
    return load_state_dict_checked(model, state, local)


def load_trained_weights(
    model: nn.Module, path: str, *, clip_file: str, clip_name: str, config_file: str = ""
) -> None:
    """Load a trained model's checkpoint ``path`` for inference (evaluation, demo): FreeSegError
    unless it fills the whole model, where :func:`load_checkpoint` only warns.

    CLIP tensors may be absent when a CLIP weights file was loaded at build time (``clip_file``,
    of the CLIP named ``clip_name``; "" when none was found). ``config_file`` names the config
    in the message.
    """
    from ..modeling.clip.model import CLIP_PREFIX, require_clip_weights

    missing, unexpected = load_checkpoint(model, path)
    require_clip_weights(clip_file, missing, path, clip_name)
    missing = [k for k in missing if not k.startswith(CLIP_PREFIX)]
    absent = set(missing)
    loaded = [k for k in model.state_dict() if k not in absent and not k.startswith(CLIP_PREFIX)]
    if missing and loaded and all(k.startswith("backbone.") for k in loaded):
        raise FreeSegError(
            f"{path} holds a backbone's weights only (what training starts from), not a trained "
            f"model; {_TRAINED_MODEL_FIX}"
        )
    if missing or unexpected:
        example = (missing + unexpected)[0]
        where = f"config {config_file}" if config_file else "the default config"
        raise FreeSegError(
            f"checkpoint {path} does not match {where}: {len(missing)} model tensors missing, "
            f"{len(unexpected)} unexpected (e.g. {example}); pass the --config-file (and KEY VALUE "
            "overrides) the model was trained with"
        )
