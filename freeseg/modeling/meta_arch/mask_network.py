"""The class-agnostic network of a FreeSeg model as one traceable module (for ONNX export).

What the open-vocabulary model computes before CLIP looks at any region: ImageNet
normalisation, backbone, pixel decoder, text interaction and masked-attention decoder, and the
segmenter's class logits 100 · normalize(embedding) @ textᵀ. The text features are an input, so
one exported graph serves any vocabulary and task (their features come from the prompt learner:
``OpenVocabulary.clip_adapter.text_features(names, task)``, K class rows plus the void row).
CLIP's region crops and the ensemble are data-dependent (a crop per non-empty mask) and stay
outside.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class MaskNetwork(nn.Module):
    """``(image, text) -> (logits, masks)`` of an ``OpenVocabulary`` model's parts.

    Args:
        backbone, sem_seg_head: the model's (``encode`` / ``decode`` as in ``OpenVocabulary``).
        pixel_mean, pixel_std: [3, 1, 1] on the 0..255 scale.
        temperature: the scale of the cosine logits (FreeSeg: 100).
    """

    def __init__(self, backbone: nn.Module, sem_seg_head: nn.Module, pixel_mean: Tensor, pixel_std: Tensor,
                 temperature: float = 100.0) -> None:
        super().__init__()
        self.backbone, self.sem_seg_head = backbone, sem_seg_head
        self.register_buffer("pixel_mean", pixel_mean.detach().clone().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", pixel_std.detach().clone().view(1, 3, 1, 1), persistent=False)
        self.temperature = temperature

    @classmethod
    def from_model(cls, model: nn.Module) -> "MaskNetwork":
        return cls(model.backbone, model.sem_seg_head, model.pixel_mean, model.pixel_std)

    def forward(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            image: [B, 3, H, W] RGB on the 0..255 scale, resized as the test mapper does; a
                smaller image padded bottom/right with ``pixel_mean`` (``OpenVocabulary.preprocess``
                pads with zeros after normalising: the same values).
            text: [K + 1, D] L2-normalised text features, the void row last.
        Returns:
            logits [B, Q, K + 1] (softmax over the last axis gives the segmenter's class
            probabilities) and mask logits [B, Q, H / 4, W / 4].
        """
        x = (image - self.pixel_mean) / self.pixel_std  # B 3 H W
        out = self.sem_seg_head.decode(self.sem_seg_head.encode(self.backbone(x)), text)
        logits = self.temperature * F.normalize(out["pred_logits"], dim=-1) @ text.T
        return logits, out["pred_masks"]
