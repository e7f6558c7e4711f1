"""Stage 1: classify single-mask region crops with CLIP and learned prompts (FreeSeg's
``ProposalClipClassifier``); only the prompt vectors learn."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...utils.errors import FreeSegError
from ..clip import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD, ClipAdapter, build_clip_adapter
from .vocabulary import TASK_TARGET_KEYS, Vocabulary, task_phrase


class ProposalClipClassifier(nn.Module):
    """Batch items: ``image`` uint8 [3, S, S] (S = CLIP input, 224), ``instances``
    ``{"gt_classes": int64 [1], "gt_masks": bool [1, S, S]}``, ``task`` ("sem_seg", "ins_seg",
    "pan_seg" or a phrase). Training → ``{"loss_cls": CE}``; eval → ``[{"logits": [K]}]``.

    The task is taken per sample (the original took the first sample's task for the whole batch).
    """

    def __init__(self, *, clip_adapter: ClipAdapter, class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.clip_adapter = clip_adapter
        # CLIP statistics on 0..1 images; not saved (FreeSeg's stage-1 state dict has none).
        self.register_buffer("pixel_mean", torch.tensor(CLIP_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.vocabulary: Vocabulary | None = Vocabulary.create(class_names) if class_names else None

    @classmethod
    def from_config(cls, cfg: Any) -> "ProposalClipClassifier":
        return cls(clip_adapter=build_clip_adapter(cfg, stage2=False))

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def set_vocabulary(
        self,
        class_names: Sequence[str],
        trainable_flag: Sequence[int] | None = None,
        thing_flags: Sequence[int] | None = None,
    ) -> None:
        """Classify into ``class_names`` from now on (checked before any compute)."""
        vocab = Vocabulary.create(class_names, trainable_flag, thing_flags)
        for task in TASK_TARGET_KEYS:
            self.clip_adapter.check_vocabulary(list(vocab.class_names), task)
        self.vocabulary = vocab

    def masked_images(self, batch: list[dict]) -> Tensor:
        """[B, 3, S, S] CLIP-normalised images with the background set to the CLIP mean *in
        normalised space* (a stage-1 quirk kept for fidelity: stage 2 fills before normalising)."""
        images = torch.stack([x["image"] for x in batch]).to(self.device).float() / 255.0
        masks = torch.stack([_instances(x)["gt_masks"][0] for x in batch]).to(self.device)
        if masks.shape[-2:] != images.shape[-2:]:
            raise FreeSegError(f"stage-1 mask size {tuple(masks.shape[-2:])} != image size {tuple(images.shape[-2:])}")
        m = (masks > 0).float()[:, None]
        images = (images - self.pixel_mean) / self.pixel_std
        return images * m + (1 - m) * self.pixel_mean

    def forward(self, batch: list[dict]) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.vocabulary is None:
            raise FreeSegError("no vocabulary: call model.set_vocabulary(class_names) before running the model")
        names = list(self.vocabulary.class_names)
        tasks = [task_phrase(x.get("task", "sem_seg")) for x in batch]
        image_features = self.clip_adapter.image_features(self.masked_images(batch))  # [B, D]
        logits = image_features.new_zeros(len(batch), len(names))
        for task in dict.fromkeys(tasks):  # each distinct task once, in first-seen order
            rows = torch.tensor([i for i, t in enumerate(tasks) if t == task], device=self.device)
            text = self.clip_adapter.class_text_features(names, task)  # [K, D]
            logits = logits.index_put((rows,), self.clip_adapter.sim_logits(text, image_features[rows]))
        if self.training:
            target = torch.cat([_instances(x)["gt_classes"] for x in batch]).to(self.device)
            return {"loss_cls": F.cross_entropy(logits, target)}
        return [{"logits": row} for row in logits]


def _instances(sample: dict) -> dict:
    inst = sample.get("instances")
    if inst is None:
        raise FreeSegError(f"stage-1 sample {sample.get('file_name', '?')} has no 'instances'; use the stage-1 mapper")
    return inst
