"""The demo's predictor: a trained model built once, run on plain RGB images.

:class:`DemoPredictor` builds the model from a config, loads ``MODEL.WEIGHTS`` with checks that
fail before any image is read (no weights, a file that is not there, a checkpoint of another
model, no CLIP), sets the vocabulary once (text features are computed on the first batch and
then served from the CLIP adapter's cache for the rest of the run), resizes each image as the
test mapper does (short side ``INPUT.MIN_SIZE_TEST``, PIL bilinear) and returns outputs at the
original image size. Images whose resized sizes are equal are batched together; images of
different sizes are not, because zero padding to a common size changes the pixel decoder's
input and hence the results.

Post-processing at the original size holds float32 scores of every class and mask logits of
every query per output pixel: a 12-megapixel photo with COCO-Stuff's 171 classes would need
~9 GB for the semantic map alone and ~38 GB for all three tasks. Images whose outputs would
exceed ``output_memory_gb`` are post-processed at the largest size of the same aspect that
fits, and their id maps and instance masks are then enlarged (nearest neighbour) to the
original size; ``sem_seg`` stays at the reduced size (:func:`~.demo_outputs.semantic_label_map`
enlarges its labels).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..utils.errors import FreeSegError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoVocabulary:
    """Class names with optional ``trainable_flag`` (1 = seen in training) and ``thing_flags``
    (1 = countable thing, 0 = amorphous stuff)."""

    class_names: tuple[str, ...]
    trainable_flag: tuple[int, ...] | None = None
    thing_flags: tuple[int, ...] | None = None

    def is_thing(self, k: int) -> bool:
        return self.thing_flags is None or bool(self.thing_flags[k])


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(h, w) after the test mapper's ResizeShortestEdge (0 = keep the size)."""
    from ..data.transforms import shortest_edge_size

    if min_size <= 0:
        return height, width
    return shortest_edge_size(height, width, min_size, max_size)


def postprocess_bytes_per_pixel(classes: int, queries: int, mask_tasks: int) -> float:
    """Peak post-processing memory per output pixel: the semantic scores (float32 per class,
    plus the resize's output) and, per instance/panoptic/entity task, the resized float32 logits
    of every query and their temporaries. Fitted on the R50 model with 171 classes and 100
    queries: +0.73 KB per pixel measured for semantic (4.4 x 171 = 0.75 KB here), +2.87 KB for
    all three tasks (3.15 KB here)."""
    return 4.4 * classes + 12.0 * queries * mask_tasks


def postprocess_size(height: int, width: int, bytes_per_pixel: float, budget_gb: float) -> tuple[int, int]:
    """(height, width) if its post-processing fits ``budget_gb``, else the largest size of the
    same aspect that does."""
    budget = budget_gb * 2**30
    if height * width * bytes_per_pixel <= budget:
        return height, width
    scale = math.sqrt(budget / (height * width * bytes_per_pixel))
    return max(1, int(height * scale)), max(1, int(width * scale))


class DemoPredictor:
    """Runs ``model`` (eval mode, vocabulary set) on RGB images.

    Args:
        model: an ``OpenVocabulary`` model with weights loaded.
        vocabulary: what to segment.
        min_size, max_size: ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``.
        batch_size: images per forward (only images with equal resized size share one).
        output_memory_gb: post-processing budget per image (module docstring).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vocabulary: DemoVocabulary,
        *,
        min_size: int,
        max_size: int,
        batch_size: int = 1,
        output_memory_gb: float = 4.0,
    ) -> None:
        if batch_size < 1:
            raise FreeSegError(f"--batch-size must be ≥ 1, got {batch_size}")
        if not output_memory_gb > 0:
            raise FreeSegError(f"--output-memory-gb must be > 0, got {output_memory_gb}")
        self.model = model.eval()
        self.vocabulary = vocabulary
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.batch_size = batch_size
        self.output_memory_gb = float(output_memory_gb)
        self._reduced_sizes: set[tuple[int, int]] = set()
        model.set_vocabulary(list(vocabulary.class_names), vocabulary.trainable_flag, vocabulary.thing_flags)

    @classmethod
    def from_config(
        cls, cfg: Any, vocabulary: DemoVocabulary, *, config_file: str = "", batch_size: int = 1,
        output_memory_gb: float = 4.0,
    ) -> "DemoPredictor":
        """Build the model of ``cfg`` on ``cfg.MODEL.DEVICE`` and load ``cfg.MODEL.WEIGHTS``."""
        from ..engine.weights import load_trained_weights, trained_weights_path
        from ..modeling import build_model
        from ..modeling.clip.build import configured_clip_weights

        if cfg.MODEL.META_ARCHITECTURE != "OpenVocabulary":
            raise FreeSegError(
                f"MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE}; the demo needs a stage-2 "
                "(OpenVocabulary) config such as configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml"
            )
        weights = trained_weights_path(cfg, "the demo")
        clip_file, clip_name = configured_clip_weights(cfg)
        model = build_model(cfg)
        load_trained_weights(model, weights, clip_file=clip_file, clip_name=clip_name, config_file=config_file)
        return cls(
            model,
            vocabulary,
            min_size=_first(cfg.INPUT.MIN_SIZE_TEST),
            max_size=int(cfg.INPUT.MAX_SIZE_TEST),
            batch_size=batch_size,
            output_memory_gb=output_memory_gb,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def input_size(self, image: np.ndarray) -> tuple[int, int]:
        """The (h, w) the model sees for an image of ``image``'s size."""
        return resized_size(image.shape[0], image.shape[1], self.min_size, self.max_size)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the model's outputs for a ``height`` x ``width`` image are computed at."""
        from ..modeling.meta_arch.outputs import INSTANCE, PANOPTIC

        tasks = set(self.model.eval_tasks)
        mask_tasks = len(tasks & {INSTANCE, PANOPTIC})
        if self.model.entity_on and PANOPTIC not in tasks:
            mask_tasks += 1  # entity then resizes the semantic task's masks
        queries = int(self.model.sem_seg_head.predictor.num_queries)
        per_pixel = postprocess_bytes_per_pixel(len(self.vocabulary.class_names), queries, mask_tasks)
        return postprocess_size(height, width, per_pixel, self.output_memory_gb)

    def _sample(self, image: np.ndarray) -> dict[str, Any]:
        from ..data.transforms import ResizeTransform

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FreeSegError(f"images must be uint8 RGB [H, W, 3], got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        nh, nw = self.input_size(image)
        resized = ResizeTransform(h, w, nh, nw).apply_image(image)
        tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        oh, ow = self.output_size(h, w)
        if (oh, ow) != (h, w) and (h, w) not in self._reduced_sizes:  # once per size (video frames)
            self._reduced_sizes.add((h, w))
            logger.warning(
                "a %dx%d image's outputs would need more than --output-memory-gb %g: post-processed at "
                "%dx%d and enlarged (nearest neighbour); raise --output-memory-gb for full-resolution "
                "boundaries", w, h, self.output_memory_gb, ow, oh,
            )
        return {"image": tensor, "height": oh, "width": ow}

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Outputs (docs/architecture.md, eval) for each image on the CPU, at its original size
        (``sem_seg`` may be smaller: module docstring)."""
        results: list[dict[str, Any]] = []
        batch: list[dict[str, Any]] = []
        for image in images:
            sample = self._sample(image)
            if batch and (len(batch) == self.batch_size or batch[0]["image"].shape != sample["image"].shape):
                results += self.model(batch)
                batch = []
            batch.append(sample)
        if batch:
            results += self.model(batch)
        return [enlarge_outputs(_to_cpu(r), image.shape[:2]) for r, image in zip(results, images)]


def enlarge_outputs(output: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """Panoptic/entity id maps and instance masks of ``output`` at ``size`` (nearest neighbour),
    with segment areas and instance boxes recomputed there; ``sem_seg`` is left as it is."""
    from ..postprocess import masks_to_boxes, resize_nearest

    h, w = size
    out = dict(output)
    for key in ("panoptic_seg", "entity"):
        if key in out and tuple(out[key][0].shape) != (h, w):
            ids = resize_nearest(out[key][0], h, w)
            areas = torch.bincount(ids.flatten().long())
            segments = [{**s, "area": int(areas[s["id"]]) if s["id"] < len(areas) else 0} for s in out[key][1]]
            out[key] = (ids, segments)
    inst = out.get("instances")
    if inst is not None and tuple(inst["pred_masks"].shape[-2:]) != (h, w):
        masks = resize_nearest(inst["pred_masks"], h, w)
        out["instances"] = {**inst, "pred_masks": masks, "pred_boxes": masks_to_boxes(masks)}
    return out


def _first(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def default_device() -> str:
    """'cuda' when a GPU is usable, else 'cpu' (``--device auto``)."""
    return "cuda" if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != "" else "cpu"
