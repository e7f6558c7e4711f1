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


def resize_nearest(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Nearest-neighbour resize of the last two dims of any dtype (label maps, id maps, bool
    masks): output pixel i takes input pixel floor((i + 0.5) · in / out), PyTorch's
    ``nearest-exact``, done by indexing so that integer and bool maps need no conversion."""
    h, w = x.shape[-2:]
    if (h, w) == (out_h, out_w):
        return x

    def index(n_in: int, n_out: int) -> torch.Tensor:
        centres = (torch.arange(n_out, dtype=torch.float64, device=x.device) + 0.5) * (n_in / n_out)
        return centres.floor().long().clamp_(max=n_in - 1)

    return x[..., index(h, out_h), :][..., index(w, out_w)]
