"""Resizing of mask logits and score maps between the network, the input and the output size."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample_masks(
    mask_logits: torch.Tensor, padded_size: tuple[int, int], image_size: tuple[int, int]
) -> torch.Tensor:
    """FreeSeg's mask upsampling: bilinear, ``align_corners=True``, to the padded input size,
    then crop away the padding.

    Args:
        mask_logits: [Q, h, w] (h, w = padded size / 4).
        padded_size: (Hp, Wp) of the padded image batch.
        image_size: (H, W) of this image before padding, H <= Hp, W <= Wp.

    Returns:
        [Q, H, W] mask logits.
    """
    up = F.interpolate(mask_logits[None], size=tuple(padded_size), mode="bilinear", align_corners=True)[0]
    return up[:, : image_size[0], : image_size[1]]


def resize_to_output(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Bilinear (``align_corners=False``) resize of [C, H, W] maps to [C, out_h, out_w]
    (detectron2's ``sem_seg_postprocess`` after cropping)."""
    if tuple(x.shape[-2:]) == (out_h, out_w):
        return x
    return F.interpolate(x[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
