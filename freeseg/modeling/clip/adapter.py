"""CLIP adapters: frozen CLIP + prompt learner (stage 1), plus void embedding and region scoring
(stage 2). Module and parameter names are FreeSeg's, so its checkpoints load as they are.

Loading a checkpoint whose ``clip_adapter.clip_model.*`` tensors describe another CLIP size than
the one built from ``CLIP_MODEL_NAME`` rebuilds the CLIP to the checkpoint's architecture first
(in :meth:`ClipAdapter._load_from_state_dict`, which ``load_state_dict`` calls before it visits
the children; :func:`match_clip_to_state_dict` does the same explicitly for loaders that filter
keys by shape first). The CLIP is frozen and stays in eval mode.
"""
from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...utils.errors import FreeSegError
from .fast_visual import visual_forward
from .model import build_clip_from_arch, clip_config_from_state_dict, embed_dim, freeze, is_openai_layout, text_width
from .prompt_learner import PromptLearner
from .region import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD, crop_regions, mask_boxes

logger = logging.getLogger(__name__)

_TEXT_CACHE_SIZE = 32


class ClipAdapter(nn.Module):
    """CLIP + learned prompts → text features per (vocabulary, task); image features.

    Text features are cached per (class names, task) — not per class names alone, which made
    the original reuse one task's features for all tasks — and the cache is keyed by the
    version counters of the prompt and CLIP tensors, so any in-place update (optimizer step,
    checkpoint load) invalidates it. While the prompts learn and autograd is on, nothing is
    cached (the features need a fresh graph).
    """

    def __init__(self, clip_model: nn.Module, prompt_learner: PromptLearner, *, quick_gelu: bool = True) -> None:
        super().__init__()
        self.clip_model = freeze(clip_model)
        self.prompt_learner = prompt_learner
        self.quick_gelu = quick_gelu
        self._text_cache: OrderedDict[tuple, tuple[tuple, Tensor]] = OrderedDict()

    # -- checks ------------------------------------------------------------------------------
    def check_clip(self) -> None:
        """FreeSegError unless the CLIP's text width and embed dim both equal ``PROMPT_DIM``."""
        dim = self.prompt_learner.prompt_dim
        if text_width(self.clip_model) != dim or embed_dim(self.clip_model) != dim:
            raise FreeSegError(
                f"CLIP text width {text_width(self.clip_model)} / embed dim {embed_dim(self.clip_model)} "
                f"!= MODEL.CLIP_ADAPTER.PROMPT_DIM {dim}; set PROMPT_DIM to the CLIP's width (512 for ViT-B/16)"
            )

    def check_vocabulary(self, class_names: list[str], task: str) -> None:
        """FreeSegError for an empty vocabulary, duplicates, or names too long for CLIP."""
        if not class_names:
            raise FreeSegError("empty vocabulary: give set_vocabulary at least one class name")
        dupes = sorted({n for n in class_names if class_names.count(n) > 1})
        if dupes:
            raise FreeSegError(f"duplicate class names in the vocabulary: {dupes}; make each name unique")
        self.prompt_learner.check_names(class_names, task, self.clip_model.positional_embedding.shape[0])

    # -- text --------------------------------------------------------------------------------
    def class_text_features(self, class_names: list[str], task: str) -> Tensor:
        """Normalised prompted features [K, D] of ``class_names`` under the task phrase."""
        self.check_clip()
        if torch.is_grad_enabled() and self.prompt_learner.trainable:
            return self.prompt_learner(class_names, task, self.clip_model)
        key = (tuple(class_names), task)
        stamp = self._weights_stamp()
        hit = self._text_cache.get(key)
        if hit is not None and hit[0] == stamp:
            self._text_cache.move_to_end(key)
            return hit[1]
        with torch.no_grad():
            features = self.prompt_learner(class_names, task, self.clip_model)
        self._text_cache[key] = (stamp, features)
        while len(self._text_cache) > _TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return features

    def _weights_stamp(self) -> tuple:
        tensors = list(self.prompt_learner.parameters()) + list(self.prompt_learner.buffers())
        tensors += list(self.clip_model.parameters())
        return tuple((id(t), t._version) for t in tensors)

    # -- image -------------------------------------------------------------------------------
    def image_features(self, images: Tensor) -> Tensor:
        """Normalised CLIP image features [N, D] of normalised images [N, 3, S, S]."""
        self.check_clip()
        size = self.clip_input_size
        if tuple(images.shape[-2:]) != (size, size):
            raise FreeSegError(f"CLIP input must be {size}x{size}, got {tuple(images.shape[-2:])}")
        return F.normalize(visual_forward(self.clip_model.visual, images), dim=-1)

    @property
    def clip_input_size(self) -> int:
        size = self.clip_model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @staticmethod
    def sim_logits(text_features: Tensor, image_features: Tensor, temperature: float = 100.0) -> Tensor:
        """FreeSeg's fixed-scale logits: 100 · image @ textᵀ (CLIP's logit_scale is unused)."""
        return temperature * image_features @ text_features.T

    # -- frozen CLIP, rebuild on load --------------------------------------------------------
    def train(self, mode: bool = True) -> "ClipAdapter":
        super().train(mode)
        self.clip_model.eval()  # frozen: no dropout / statistics updates, in either stage
        return self

    def match_clip_to(self, state_dict: dict[str, Tensor], prefix: str) -> bool:
        """Rebuild ``clip_model`` if ``state_dict[prefix + "clip_model.*"]`` is another CLIP size.

        Returns whether it rebuilt. The new CLIP is frozen, on the old one's device.
        """
        head = prefix + "clip_model."
        incoming = {k[len(head):]: v for k, v in state_dict.items() if k.startswith(head)}
        if not incoming or not is_openai_layout(incoming):
            return False
        current = self.clip_model.state_dict()
        if set(incoming) == set(current) and all(current[k].shape == v.shape for k, v in incoming.items()):
            return False
        device = next(self.clip_model.parameters()).device
        arch = clip_config_from_state_dict(incoming)
        logger.info("rebuilding CLIP to the checkpoint's architecture: %s", arch)
        self.clip_model = freeze(build_clip_from_arch(arch, quick_gelu=self.quick_gelu).to(device))
        self.prompt_learner.init_signals(self.clip_model.token_embedding)
        self._text_cache.clear()
        return True

    def prepare_for_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Hook the engine's ``load_checkpoint`` calls (keys relative to this module) before it
        checks shapes: rebuild the CLIP to the checkpoint's architecture."""
        self.match_clip_to(state_dict, "")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # noqa: D102,E501
        self.match_clip_to(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class MaskFormerClipAdapter(ClipAdapter):
    """Stage-2 adapter: adds the trainable void embedding and CLIP scoring of mask regions.

    Args:
        mask_fill: "mean" (CLIP mean×255) or "zero": value outside the mask in a crop.
        mask_expand_ratio: box scale about its centre before cropping.
        mask_thr: sigmoid threshold of the binary crop masks (query valid if any pixel on).
        mask_matting: weight the crop by the soft mask instead of the binary one.
        region_batch: crops per CLIP forward (memory and speed; results only by float rounding,
            ~1e-6); 0 = by device,
            8 on a CPU (the activations of 8 ViT-B crops stay in cache), 32 on a GPU.
        region_dtype: "float32" (exact), or "bfloat16" / "float16": the crops go through a
            copy of CLIP's image tower in that precision (about 2x faster on CPUs with native
            bf16 and on GPUs; region features within ~1e-2 relative, docs/demo.md "Speed").
    """

    def __init__(
        self,
        clip_model: nn.Module,
        prompt_learner: PromptLearner,
        *,
        quick_gelu: bool = True,
        mask_fill: str = "mean",
        mask_expand_ratio: float = 1.0,
        mask_thr: float = 0.5,
        mask_matting: bool = False,
        region_batch: int = 0,
        region_dtype: str = "float32",
    ) -> None:
        super().__init__(clip_model, prompt_learner, quick_gelu=quick_gelu)
        fills = {"mean": [255.0 * c for c in CLIP_PIXEL_MEAN], "zero": [0.0, 0.0, 0.0]}
        if mask_fill not in fills:
            raise FreeSegError(f"MODEL.CLIP_ADAPTER.MASK_FILL must be 'mean' or 'zero', got {mask_fill!r}")
        self.register_buffer("mask_fill", torch.tensor(fills[mask_fill]), persistent=False)
        self.mask_expand_ratio = mask_expand_ratio
        self.mask_thr = mask_thr
        self.mask_matting = mask_matting
        if region_batch < 0:
            raise FreeSegError(f"MODEL.CLIP_ADAPTER.REGION_BATCH must be >= 0 (0 = by device), got {region_batch}")
        self.region_batch = region_batch
        if region_dtype not in REGION_DTYPES:
            raise FreeSegError(
                f"MODEL.CLIP_ADAPTER.REGION_DTYPE must be one of {sorted(REGION_DTYPES)}, got {region_dtype!r}"
            )
        self.region_dtype = region_dtype
        # the low-precision copy of the image tower and what it was copied from; a list so
        # that nn.Module does not register it (it is not part of the checkpoint)
        self._low_precision_visual: list = []
        dim = prompt_learner.prompt_dim
        self.non_object_embedding = nn.Parameter(torch.empty(1, dim))
        nn.init.normal_(self.non_object_embedding, std=dim**-0.5)
        self.register_buffer("pixel_mean", 255.0 * torch.tensor(CLIP_PIXEL_MEAN).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", 255.0 * torch.tensor(CLIP_PIXEL_STD).view(1, 3, 1, 1))

    def text_features(self, class_names: list[str], task: str) -> Tensor:
        """[K+1, D]: normalised class features, then the normalised void embedding LAST."""
        classes = self.class_text_features(class_names, task)
        return torch.cat([classes, F.normalize(self.non_object_embedding, dim=-1)])

    def classify_regions(self, image: Tensor, mask_probs: Tensor, text_features: Tensor, select: Tensor | None = None) -> "RegionScores":
        """CLIP scores of each query's mask region.

        Args:
            image: uint8/float [3, H, W], 0..255, the model's input image (not padded).
            mask_probs: [Q, H, W] sigmoid mask probabilities (or 0/1 masks) at that size.
            text_features: [K+1, D] from :meth:`text_features`.
            select: optional bool [Q], queries allowed to go through CLIP (``REGION_TOPK``).
        """
        binary = mask_probs > self.mask_thr
        valid = binary.flatten(1).any(dim=1)
        if select is not None:
            valid = valid & select
        boxes = mask_boxes(binary[valid])
        weights = mask_probs[valid] if self.mask_matting else binary[valid]
        features = []
        # (split() of an empty range yields one empty chunk: no valid region means no CLIP call)
        batch = self.region_batch or (32 if image.device.type == "cuda" else 8)
        chunks = torch.arange(boxes.shape[0]).split(batch) if boxes.shape[0] else ()
        for chunk in chunks:
            crops = crop_regions(
                image, weights[chunk], boxes[chunk], fill=self.mask_fill, pixel_mean=self.pixel_mean.view(3),
                pixel_std=self.pixel_std.view(3), expand_ratio=self.mask_expand_ratio, size=self.clip_input_size,
            )
            features.append(self.region_features(crops))
        dim = text_features.shape[1]
        feats = torch.cat(features) if features else text_features.new_zeros(0, dim)
        logits = self.sim_logits(text_features, feats)  # [n_valid, K+1]
        probs = F.softmax(logits[:, :-1], dim=-1)
        full = text_features.new_ones(valid.shape[0], text_features.shape[0] - 1)
        full[valid] = probs
        return RegionScores(valid=valid, boxes=boxes, features=feats, logits=logits, probs=full)

    def region_features(self, crops: Tensor) -> Tensor:
        """Normalised fp32 CLIP features [N, D] of crops [N, 3, S, S], in ``region_dtype``."""
        dtype = REGION_DTYPES[self.region_dtype]
        if dtype == torch.float32:
            return self.image_features(crops)
        features = visual_forward(self._visual_in(dtype, crops.device), crops.to(dtype))
        return F.normalize(features.float(), dim=-1)

    def _visual_in(self, dtype: torch.dtype, device: torch.device) -> nn.Module:
        source = self.clip_model.visual
        stamp = (id(source), dtype, device, tuple((id(p), p._version) for p in source.parameters()))
        if not self._low_precision_visual or self._low_precision_visual[0] != stamp:
            if device.type == "cpu" and not cpu_has_native(dtype):
                logger.warning(f"MODEL.CLIP_ADAPTER.REGION_DTYPE {self.region_dtype}: this CPU has no native support "
                               "for it, so it will be slower than float32; set it to float32")
            self._low_precision_visual[:] = [stamp, copy.deepcopy(source).to(device=device, dtype=dtype).eval()]
        return self._low_precision_visual[1]


REGION_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether oneDNN has native kernels for ``dtype`` on this CPU (bf16: AVX512-BF16 / AMX;
    fp16: AVX512-FP16 / AMX-FP16); without them low precision is slower than float32."""
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    if probe is None:
        return dtype == torch.float32
    try:
        return bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class RegionScores:
    """CLIP region results: ``valid`` bool [Q]; for the n valid queries ``boxes`` [n, 4],
    ``features`` [n, D], ``logits`` [n, K+1] (void last); ``probs`` [Q, K] (1 where not valid)."""

    valid: Tensor
    boxes: Tensor
    features: Tensor
    logits: Tensor
    probs: Tensor

    def spread(self, index: Tensor, num_queries: int) -> "RegionScores":
        """These results, computed for the queries ``index`` (ascending) of ``num_queries``, as
        results over all of them: the others not valid, with probability 1 (as empty masks)."""
        valid = torch.zeros(num_queries, dtype=torch.bool, device=self.valid.device)
        valid[index] = self.valid
        probs = self.probs.new_ones(num_queries, self.probs.shape[1])
        probs[index] = self.probs
        return RegionScores(valid=valid, boxes=self.boxes, features=self.features, logits=self.logits, probs=probs)


def match_clip_to_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> list[str]:
    """Rebuild every ClipAdapter's CLIP to ``state_dict``'s shapes; returns the rebuilt prefixes.

    For checkpoint loaders that drop shape-mismatched keys before ``load_state_dict``: call this
    first so the CLIP tensors match.
    """
    rebuilt = []
    for name, module in model.named_modules():
        if isinstance(module, ClipAdapter) and module.match_clip_to(state_dict, f"{name}." if name else ""):
            rebuilt.append(name)
    return rebuilt
