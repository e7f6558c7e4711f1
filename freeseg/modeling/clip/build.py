"""Builders: config → CLIP adapter (the only place the CLIP modules read ``cfg``)."""
from __future__ import annotations

from typing import Any

from ...utils.errors import FreeSegError
from .adapter import ClipAdapter, MaskFormerClipAdapter
from .model import RANDOM_CLIP, build_clip, clip_weights_path, resolve_clip_name
from .prompt_learner import PromptLearner


def build_prompt_learner(cfg: Any, clip_model: Any) -> PromptLearner:
    """``MODEL.CLIP_ADAPTER.{PROMPT_LEARNER, PROMPT_DIM, PROMPT_SHAPE, TASK_PROMPT_SHAPE, PROMPT_CHECKPOINT}``."""
    ca = cfg.MODEL.CLIP_ADAPTER
    if ca.PROMPT_LEARNER != "learnable":
        raise FreeSegError(
            f"MODEL.CLIP_ADAPTER.PROMPT_LEARNER {ca.PROMPT_LEARNER!r} is not supported; FreeSeg uses 'learnable'"
        )
    prefix, suffix = (int(v) for v in ca.PROMPT_SHAPE)
    learner = PromptLearner(
        prompt_dim=int(ca.PROMPT_DIM),
        prefix_length=prefix,
        suffix_length=suffix,
        task_prompt_length=int(ca.TASK_PROMPT_SHAPE),
        token_embedding=clip_model.token_embedding,
    )
    if ca.PROMPT_CHECKPOINT:
        learner.load_prompt_checkpoint(ca.PROMPT_CHECKPOINT)
    return learner


def configured_clip_weights(cfg: Any) -> tuple[str, str]:
    """(the CLIP weights file for ``cfg``: ``MODEL.CLIP_ADAPTER.CLIP_WEIGHTS``, else
    ``$FREESEG_CLIP_WEIGHTS``, else ``weights/<name>.pt`` if there, else ""; the CLIP's name)."""
    ca = cfg.MODEL.CLIP_ADAPTER
    name = str(ca.CLIP_MODEL_NAME)
    return clip_weights_path(str(getattr(ca, "CLIP_WEIGHTS", "")), name), name


def build_clip_adapter(cfg: Any, *, stage2: bool = True) -> ClipAdapter:
    """The CLIP adapter: :class:`MaskFormerClipAdapter` for stage 2, :class:`ClipAdapter` for stage 1."""
    ca = cfg.MODEL.CLIP_ADAPTER
    weights, _ = configured_clip_weights(cfg)
    clip_model = build_clip(ca.CLIP_MODEL_NAME, weights)
    _, quick_gelu = resolve_clip_name(ca.CLIP_MODEL_NAME)
    learner = build_prompt_learner(cfg, clip_model)
    if not stage2:
        adapter: ClipAdapter = ClipAdapter(clip_model, learner, quick_gelu=quick_gelu)
    else:
        if not ca.REGION_RESIZED:
            raise FreeSegError(
                "MODEL.CLIP_ADAPTER.REGION_RESIZED False is not supported: CLIP needs fixed-size crops; set it True"
            )
        adapter = MaskFormerClipAdapter(
            clip_model,
            learner,
            quick_gelu=quick_gelu,
            mask_fill=ca.MASK_FILL,
            mask_expand_ratio=float(ca.MASK_EXPAND_RATIO),
            mask_thr=float(ca.MASK_THR),
            mask_matting=bool(ca.MASK_MATTING),
            region_batch=int(ca.REGION_BATCH),
            region_dtype=str(ca.REGION_DTYPE),
        )
    if weights and weights != RANDOM_CLIP:  # a real CLIP is there now: its width must match the prompts
        adapter.check_clip()
    return adapter
