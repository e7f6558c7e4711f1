"""CLIP models through open_clip, from local weights only.

FreeSeg names OpenAI's CLIP models ("ViT-B/16", "RN50", ...). We map those to open_clip's
QuickGELU variants (OpenAI trained with QuickGELU) and accept any other open_clip model name
as is. Weights come from a local file: OpenAI's original checkpoint (a TorchScript archive or
a plain state dict), an open_clip checkpoint, or a FreeSeg checkpoint that carries the CLIP
under ``clip_adapter.clip_model.*``. Nothing is downloaded.

OpenAI-layout state dicts (which open_clip keeps for its standard CLIP) also define the
architecture: :func:`clip_config_from_state_dict` reads widths, depths, patch size, context
and vocabulary from the tensor shapes (heads = width // 64), as OpenAI's ``build_model``
does, so a checkpoint with any CLIP size can be loaded into a model built for another.
"""
from __future__ import annotations

import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import Tensor

from ...utils.errors import FreeSegError

logger = logging.getLogger(__name__)

# FreeSeg / OpenAI model names -> open_clip architectures with OpenAI's QuickGELU.
OPENAI_CLIP_NAMES: dict[str, str] = {
    "RN50": "RN50-quickgelu",
    "RN101": "RN101-quickgelu",
    "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu",
    "RN50x64": "RN50x64-quickgelu",
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}

# The file OpenAI publishes for each name (what the error message asks for).
OPENAI_CLIP_FILES: dict[str, str] = {
    name: name.replace("/", "-") + ".pt" for name in OPENAI_CLIP_NAMES
}

CLIP_WEIGHTS_ENV = "FREESEG_CLIP_WEIGHTS"
# ``MODEL.CLIP_ADAPTER.CLIP_WEIGHTS random``: a randomly initialised CLIP on purpose (tests,
# benchmarks, smoke runs); without it, training and evaluation refuse a CLIP no file filled.
RANDOM_CLIP = "random"
CLIP_PREFIX = "clip_adapter.clip_model."
_FREESEG_CLIP_PREFIX = CLIP_PREFIX
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class ClipArch:
    """A CLIP architecture as OpenAI's ``build_model`` infers it from a state dict."""

    embed_dim: int
    vision_layers: int | tuple[int, ...]
    vision_width: int
    vision_patch_size: int | None  # None for the modified ResNets
    image_size: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int

    @property
    def text_heads(self) -> int:
        return self.text_width // 64


def resolve_clip_name(name: str) -> tuple[str, bool]:
    """(open_clip model name, is an OpenAI model) for a FreeSeg or open_clip name."""
    if name in OPENAI_CLIP_NAMES:
        return OPENAI_CLIP_NAMES[name], True
    if name in open_clip.list_models():
        return name, name.endswith("-quickgelu")
    known = sorted(OPENAI_CLIP_NAMES) + ["<any open_clip.list_models() name>"]
    raise FreeSegError(
        f"unknown CLIP model {name!r} in MODEL.CLIP_ADAPTER.CLIP_MODEL_NAME; use one of {known}"
    )


def clip_weights_path(configured: str, model_name: str) -> str:
    """The CLIP weights file: the config key, else ``$FREESEG_CLIP_WEIGHTS``, else
    ``weights/<name with "/" as "-">.pt`` when that file exists, else "" (none).
    :data:`RANDOM_CLIP` is passed through (random weights asked for)."""
    if configured or os.environ.get(CLIP_WEIGHTS_ENV):
        return configured or os.environ[CLIP_WEIGHTS_ENV]
    default = os.path.join("weights", model_name.replace("/", "-") + ".pt")
    return default if os.path.isfile(default) else ""


def require_clip_weights(clip_file: str, missing: list[str] | None, source: str, model_name: str) -> None:
    """FreeSegError when the model's CLIP would keep random weights.

    Args:
        clip_file: what :func:`clip_weights_path` found ("" for nothing).
        missing: the model keys the checkpoint ``source`` lacked (None: no checkpoint loaded).
        source: that checkpoint, for the message.
        model_name: ``MODEL.CLIP_ADAPTER.CLIP_MODEL_NAME``, to name the file wanted.
    """
    if clip_file:  # a weights file, or RANDOM_CLIP asked for on purpose
        return
    if missing is not None and not any(k.startswith(CLIP_PREFIX) for k in missing):
        return  # the checkpoint filled the CLIP
    wanted = (f"OpenAI's {OPENAI_CLIP_FILES[model_name]}" if model_name in OPENAI_CLIP_FILES
              else f"the open_clip checkpoint of {model_name}")
    where = f"{source} holds no CLIP weights and no" if missing is not None else "No"
    raise FreeSegError(
        f"{where} CLIP weights file was found: put {wanted} at weights/{model_name.replace('/', '-')}.pt "
        f"or point MODEL.CLIP_ADAPTER.CLIP_WEIGHTS (or ${CLIP_WEIGHTS_ENV}) at it (README, 'Where weights go'); "
        f"MODEL.CLIP_ADAPTER.CLIP_WEIGHTS {RANDOM_CLIP} runs with a random CLIP on purpose"
    )


def load_clip_state_dict(path: str, model_name: str = "ViT-B/16") -> dict[str, Tensor]:
    """Read CLIP weights (fp32, OpenAI/open_clip key names) from a local file.

    Accepts OpenAI's TorchScript archives, plain state dicts, open_clip training checkpoints
    (``{"state_dict": ...}``, optional ``module.`` prefix) and FreeSeg/detectron2 checkpoints
    (``{"model": {"clip_adapter.clip_model.*": ...}}``).
    """
    if not os.path.isfile(path):
        wanted = OPENAI_CLIP_FILES.get(model_name, f"the open_clip checkpoint of {model_name}")
        raise FreeSegError(
            f"CLIP weights not found: {path!r}. Put {wanted} on this machine and point "
            f"MODEL.CLIP_ADAPTER.CLIP_WEIGHTS (or ${CLIP_WEIGHTS_ENV}) at it; nothing is downloaded"
        )
    state = _read_weights_file(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise FreeSegError(f"CLIP weights file {path!r} holds no state dict")
    if any(k.startswith(_FREESEG_CLIP_PREFIX) for k in state):
        state = {k[len(_FREESEG_CLIP_PREFIX):]: v for k, v in state.items() if k.startswith(_FREESEG_CLIP_PREFIX)}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    out = {}
    for key, value in state.items():
        if key in _OPENAI_EXTRA_KEYS or not torch.is_tensor(value):
            continue
        # OpenAI ships fp16 weights; FreeSeg runs CLIP in fp32 (model.float()).
        out[key] = value.float() if value.is_floating_point() else value
    return out


def _is_torchscript(path: str) -> bool:
    """OpenAI's released .pt files are TorchScript zip archives (they carry ``*/code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _read_weights_file(path: str) -> Any:
    if _is_torchscript(path):
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but these files need it
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(path, map_location="cpu").state_dict()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise FreeSegError(f"cannot read CLIP weights {path!r} ({exc.__class__.__name__}: {exc})") from exc


def is_openai_layout(state_dict: dict[str, Tensor]) -> bool:
    """Whether the architecture can be inferred from the tensor shapes (OpenAI's layout)."""
    needed = ("token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight")
    vision = "visual.proj" in state_dict or "visual.attnpool.positional_embedding" in state_dict
    return vision and all(k in state_dict for k in needed) and torch.is_tensor(state_dict["text_projection"])


def clip_config_from_state_dict(state_dict: dict[str, Tensor]) -> ClipArch:
    """Infer the CLIP architecture from OpenAI-layout weights (OpenAI's ``build_model`` rules)."""
    if not is_openai_layout(state_dict):
        raise FreeSegError(
            "CLIP weights are not in OpenAI's layout (token_embedding, text_projection, visual.proj); "
            "name their open_clip architecture in MODEL.CLIP_ADAPTER.CLIP_MODEL_NAME"
        )
    if "visual.proj" in state_dict:
        conv = state_dict["visual.conv1.weight"]  # [width, 3, patch, patch]
        vision_layers: int | tuple[int, ...] = len(
            [k for k in state_dict if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")]
        )
        vision_width, patch = conv.shape[0], conv.shape[-1]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        image_size = patch * grid
    else:  # modified ResNet: layer counts per stage, attention-pool grid = image / 32
        vision_layers = tuple(
            len({k.split(".")[2] for k in state_dict if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)
        )
        vision_width, patch = state_dict["visual.layer1.0.conv1.weight"].shape[0], None
        grid = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        image_size = grid * 32
    return ClipArch(
        embed_dim=state_dict["text_projection"].shape[1],
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=patch,
        image_size=image_size,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        text_width=state_dict["ln_final.weight"].shape[0],
        text_layers=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")}),
    )


def build_clip_from_arch(arch: ClipArch, quick_gelu: bool = True) -> CLIP:
    """A randomly initialised fp32 open_clip ``CLIP`` with the given architecture."""
    if arch.text_width < 64:
        raise FreeSegError(f"CLIP text width {arch.text_width} < 64 gives 0 attention heads (heads = width // 64)")
    vision_cfg = CLIPVisionCfg(
        layers=arch.vision_layers,
        width=arch.vision_width,
        patch_size=arch.vision_patch_size or 16,
        image_size=arch.image_size,
    )
    text_cfg = CLIPTextCfg(
        context_length=arch.context_length,
        vocab_size=arch.vocab_size,
        width=arch.text_width,
        heads=arch.text_heads,
        layers=arch.text_layers,
    )
    return CLIP(arch.embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=quick_gelu)


def build_clip_from_state_dict(state_dict: dict[str, Tensor], quick_gelu: bool = True) -> CLIP:
    """Build the architecture the OpenAI-layout weights describe and load them (strict)."""
    model = build_clip_from_arch(clip_config_from_state_dict(state_dict), quick_gelu=quick_gelu)
    load_clip_weights(model, state_dict)
    return model


def load_clip_weights(model: CLIP, state_dict: dict[str, Tensor]) -> None:
    """Strict load that reports mismatched names as one FreeSegError."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise FreeSegError(
            f"CLIP weights do not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}; "
            "check MODEL.CLIP_ADAPTER.CLIP_MODEL_NAME"
        )


def build_clip(name: str, weights: str = "") -> CLIP:
    """The frozen fp32 CLIP named ``name``, with weights from the local file ``weights``.

    Without a file the architecture is built with random weights (for a later checkpoint load,
    which rebuilds it to the checkpoint's shape); one log line says so.
    """
    arch_name, quick_gelu = resolve_clip_name(name)
    if weights == RANDOM_CLIP:
        logger.info("CLIP %s built with random weights (MODEL.CLIP_ADAPTER.CLIP_WEIGHTS %s)", name, RANDOM_CLIP)
        model = _create_named(arch_name)
    elif not weights:
        logger.info(
            "CLIP %s built without weights (MODEL.CLIP_ADAPTER.CLIP_WEIGHTS / $%s unset): "
            "load a FreeSeg checkpoint or set the weights before using it", name, CLIP_WEIGHTS_ENV,
        )
        model = _create_named(arch_name)
    else:
        state_dict = load_clip_state_dict(weights, name)
        if name in OPENAI_CLIP_NAMES or is_openai_layout(state_dict):
            model = build_clip_from_state_dict(state_dict, quick_gelu=quick_gelu or name in OPENAI_CLIP_NAMES)
        else:
            model = _create_named(arch_name)
            load_clip_weights(model, state_dict)
    return freeze(model.float())


def _create_named(arch_name: str) -> torch.nn.Module:
    """A randomly initialised open_clip model (plain CLIPs built directly from their config,
    which skips open_clip's "no pretrained weights" warning; others through ``create_model``)."""
    cfg = open_clip.get_model_config(arch_name)
    if cfg and set(cfg) <= {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}:
        return CLIP(
            cfg["embed_dim"],
            vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]),
            text_cfg=CLIPTextCfg(**cfg["text_cfg"]),
            quick_gelu=cfg.get("quick_gelu", False),
        )
    return open_clip.create_model(arch_name, pretrained=None)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """No gradients and eval mode (CLIP stays frozen in both FreeSeg stages)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def text_width(model: CLIP) -> int:
    """Width of CLIP's token embeddings (= the prompt vectors' width)."""
    return model.token_embedding.weight.shape[1]


def embed_dim(model: CLIP) -> int:
    """Width of CLIP's joint image/text embedding."""
    proj = model.text_projection
    return proj.weight.shape[0] if isinstance(proj, torch.nn.Linear) else proj.shape[1]


def encode_text_embeddings(model: CLIP, x: Tensor, eot_index: Tensor) -> Tensor:
    """Run CLIP's text tower on token *embeddings* (how learned prompts enter CLIP).

    Args:
        x: [N, L, W] token embeddings, L = CLIP's context length.
        eot_index: int64 [N], where each sequence's EOT token sits (read there).
    Returns:
        [N, D] projected, unnormalised text features.
    """
    mask = model.attn_mask
    if _is_causal(mask):
        # Under a causal mask nothing after the last EOT reaches an EOT token, so the padding
        # behind it need not run: FreeSeg's prompts are ~25 of CLIP's 77 positions (~3x less work).
        length = int(eot_index.max()) + 1
        x, mask = x[:, :length], mask[:length, :length]
    x = x + model.positional_embedding[: x.shape[1]].to(x.dtype)
    x = model.transformer(x, attn_mask=mask)  # batch-first [N, L, W]
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot_index]
    proj = model.text_projection
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def _is_causal(mask: Tensor | None) -> bool:
    """Whether an additive attention mask blocks exactly the positions after each query."""
    if mask is None or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    future = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.isneginf(mask[future]).all() and (mask[~future] == 0).all())
