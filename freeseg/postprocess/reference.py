"""The original FreeSeg's panoptic inference, bugs included (``TEST.REFERENCE_POSTPROCESS``).

Only for fidelity checks against outputs of the original code: use
:func:`freeseg.postprocess.panoptic_inference` otherwise. Reproduced on purpose
(FREESEG_SPEC §2, §8.3):

- labels and scores from a sharpened softmax(s / 0.01), not from s itself;
- queries whose label equals ``num_classes_filter`` (the config's ``NUM_CLASSES``, meant
  as the void index) are dropped, so on a 171-class test set with 156 training classes a
  real class is lost;
- a query's segment is its mask (sigmoid ≥ 0.5) intersected with the *semantic* argmax map
  where that map says the query's label; ``OBJECT_MASK_THRESHOLD`` is not used;
- later segments overwrite earlier ones;
- the id map is cast to uint8 (ids wrap past 255), resized to the output size with PIL
  nearest, and segments whose id vanished are dropped.

The map is returned as int32 (our contract) holding the uint8-wrapped values.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from freeseg.postprocess.semantic import semantic_inference

Segment = dict[str, int | bool]


def reference_panoptic_inference(
    class_scores: torch.Tensor,
    mask_logits: torch.Tensor,
    is_thing: torch.Tensor,
    num_classes_filter: int,
    output_size: tuple[int, int],
    overlap_threshold: float = 0.5,
    thing_score_threshold: float = 0.5,
) -> tuple[torch.Tensor, list[Segment]]:
    """
    Args:
        class_scores: [Q, K] the task's CLIP-ensembled class scores (no void column).
        mask_logits: [Q, H, W] at the input image size (after :func:`upsample_masks`).
        is_thing: bool [K].
        num_classes_filter: label value dropped (the original's ``NUM_CLASSES``).
        output_size: (out_h, out_w) to resize the map to.
        overlap_threshold: minimum segment / own-mask area ratio (``TEST.OVERLAP_THRESHOLD``).
        thing_score_threshold: minimum sharpened score for thing segments.

    Returns:
        (int32 [out_h, out_w] ids (uint8-wrapped), segments [{"id", "isthing", "category_id"}]).
    """
    scores, labels = torch.softmax(class_scores / 0.01, dim=-1).max(-1)
    probs = mask_logits.sigmoid()
    sem_map = semantic_inference(class_scores, mask_logits).argmax(0)  # [H, W]
    panoptic = torch.zeros(mask_logits.shape[-2:], dtype=torch.int32)
    segments: list[Segment] = []
    stuff_ids: dict[int, int] = {}
    for q in range(class_scores.shape[0]):
        label = int(labels[q])
        if label == num_classes_filter:
            continue
        isthing = bool(is_thing[label])
        own = probs[q] >= 0.5
        region = own & (sem_map == label)
        own_area, area = int(own.sum()), int(region.sum())
        if own_area == 0 or area == 0 or area / own_area < overlap_threshold:
            continue
        if isthing and float(scores[q]) < thing_score_threshold:
            continue
        if not isthing and label in stuff_ids:
            panoptic[region] = stuff_ids[label]
            continue
        segment_id = len(segments) + 1
        if not isthing:
            stuff_ids[label] = segment_id
        panoptic[region] = segment_id
        segments.append({"id": segment_id, "isthing": isthing, "category_id": label})
    out_h, out_w = output_size
    as_uint8 = panoptic.to(torch.uint8).cpu().numpy()
    resized = np.asarray(Image.fromarray(as_uint8).resize((out_w, out_h), Image.NEAREST))
    present = set(np.unique(resized).tolist())
    segments = [s for s in segments if int(s["id"]) in present]  # ids > 255 always vanish
    return torch.from_numpy(resized.astype(np.int32)), segments
