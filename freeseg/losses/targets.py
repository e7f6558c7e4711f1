"""Turn per-image ground truth into the criterion's target layout."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from freeseg.utils.errors import FreeSegError


def prepare_targets(
    instances: list[dict[str, torch.Tensor]], padded_size: tuple[int, int]
) -> list[dict[str, torch.Tensor]]:
    """Zero-pad ground-truth masks (bottom/right) to the padded batch size, as FreeSeg does.

    Args:
        instances: per image {"gt_classes": int64 [N], "gt_masks": bool [N, h, w]}.
        padded_size: (Hp, Wp) of the padded image batch, Hp >= h and Wp >= w.

    Returns:
        per image {"labels": int64 [N], "masks": bool [N, Hp, Wp]}.
    """
    hp, wp = padded_size
    targets = []
    for inst in instances:
        masks = inst["gt_masks"]
        h, w = masks.shape[-2:]
        if h > hp or w > wp:
            raise FreeSegError(
                f"gt_masks of size {(h, w)} are larger than the padded batch {(hp, wp)}; "
                f"pad the images before the targets"
            )
        targets.append({"labels": inst["gt_classes"], "masks": F.pad(masks, (0, wp - w, 0, hp - h))})
    return targets
