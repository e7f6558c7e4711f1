"""A toy segmentation model and data that follow the architecture contract, for engine tests.

The model has what the engine must handle in the real ones: a ``backbone`` (LR multiplier),
norm layers and an embedding (no weight decay), a frozen part (like CLIP), dropout (torch RNG)
and a task drawn per iteration from a private ``random.Random`` (as ``OpenVocabulary`` does).
"""
from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

NUM_CLASSES = 3
TASKS = ("sem", "ins", "pan")


class ToySegmenter(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GroupNorm(2, width), nn.ReLU())
        self.task_embed = nn.Embedding(len(TASKS), width)
        self.head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(width, num_classes, 1))
        self.frozen = nn.Linear(width, width)  # stands in for the frozen CLIP
        self.frozen.requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor([120.0, 115.0, 100.0]).view(3, 1, 1), persistent=False)
        self.force_nan = False
        self._task_rng = random.Random(0)  # like OpenVocabulary: a private generator per model

    def forward(self, batch: list[dict[str, Any]]):
        images = torch.stack([(b["image"].float() - self.pixel_mean) / 60.0 for b in batch])
        feats = self.backbone(images)  # B C H W
        task = self._task_rng.choice(TASKS) if self.training else "sem"
        feats = feats + self.task_embed.weight[TASKS.index(task)].view(1, -1, 1, 1)
        logits = self.head(feats)  # B K H W
        if not self.training:
            return [{"sem_seg": lg.softmax(0)} for lg in logits]
        target = torch.stack([b["sem_seg"] for b in batch])
        loss_ce = F.cross_entropy(logits, target, ignore_index=255)
        loss_reg = 0.01 * self.task_embed.weight.pow(2).mean()
        if self.force_nan:
            loss_ce = loss_ce * float("nan")
        return {"loss_ce": loss_ce, "loss_reg": loss_reg}


def toy_batch(seed: int, batch_size: int = 2, size: int = 16) -> list[dict[str, Any]]:
    """A learnable batch: the label is the brightest colour channel of each pixel."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(batch_size):
        image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
        sem_seg = image.float().argmax(0)
        out.append({"image": image, "sem_seg": sem_seg, "height": size, "width": size,
                    "file_name": f"toy_{seed}_{i}.png", "image_id": seed * 100 + i})
    return out


class ToyLoader:
    """Infinite, deterministic stream: batch ``k`` depends only on (seed, rank, k); supports
    ``set_start_iter`` so that a resumed run sees the batches it would have seen."""

    def __init__(self, batch_size: int = 2, seed: int = 0, rank: int = 0) -> None:
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.start = 0

    def set_start_iter(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        k = self.start
        while True:
            yield toy_batch(self.seed * 1_000_003 + self.rank * 10_007 + k, self.batch_size)
            k += 1


def toy_cfg(output_dir: str, max_iter: int = 30, **solver: Any):
    """A real config (``freeseg.get_cfg``) set up for the toy model: AdamW, poly LR, no eval."""
    from freeseg.config import get_cfg

    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.SEED = 7
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TEST = ()
    s = cfg.SOLVER
    s.OPTIMIZER = "ADAMW"
    s.BASE_LR = 0.05
    s.WEIGHT_DECAY = 1e-4
    s.MAX_ITER = max_iter
    s.IMS_PER_BATCH = 2
    s.LR_SCHEDULER_NAME = "WarmupPolyLR"
    s.WARMUP_ITERS = 0
    s.CHECKPOINT_PERIOD = 5
    s.CLIP_GRADIENTS.ENABLED = True
    s.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    s.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    for key, value in solver.items():
        node, _, leaf = key.rpartition(".")
        (s[node] if node else s)[leaf] = value
    return cfg
