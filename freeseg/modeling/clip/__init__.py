"""Frozen CLIP (open_clip), learned prompts, text classifier, region scoring and ensemble."""
from .adapter import ClipAdapter, MaskFormerClipAdapter, RegionScores, match_clip_to_state_dict
from .build import build_clip_adapter, build_prompt_learner
from .model import (
    OPENAI_CLIP_NAMES,
    ClipArch,
    build_clip,
    build_clip_from_arch,
    build_clip_from_state_dict,
    clip_config_from_state_dict,
    load_clip_state_dict,
)
from .prompt_learner import PromptLearner
from .region import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD, crop_regions, ensemble_scores, expand_box, mask_boxes
from .tokenizer import ClipTokenizer, get_tokenizer

__all__ = [
    "CLIP_PIXEL_MEAN",
    "CLIP_PIXEL_STD",
    "OPENAI_CLIP_NAMES",
    "ClipAdapter",
    "ClipArch",
    "ClipTokenizer",
    "MaskFormerClipAdapter",
    "PromptLearner",
    "RegionScores",
    "build_clip",
    "build_clip_adapter",
    "build_clip_from_arch",
    "build_clip_from_state_dict",
    "build_prompt_learner",
    "clip_config_from_state_dict",
    "crop_regions",
    "ensemble_scores",
    "expand_box",
    "get_tokenizer",
    "load_clip_state_dict",
    "mask_boxes",
    "match_clip_to_state_dict",
]
