"""Stage 2: FreeSeg's all-task open-vocabulary segmenter (``OpenVocabulary``).

Mask2Former whose pixel features are conditioned on prompted CLIP text features and whose
queries are classified by cosine similarity with them; at test time CLIP also scores each
query's mask region and the two are ensembled. One model, three tasks: the task only changes
the task phrase in the text prompt.

Unlike the original, evaluation runs the backbone and pixel decoder once per batch whatever
the number of tasks (only the text-conditioned interaction, decoder, ensemble and
post-processing run per task), text features are computed once per (vocabulary, task), and
instance/panoptic results come from Mask2Former's correct inference (docs/differences.md).
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...utils import comm
from ...utils.errors import FreeSegError
from ..clip import MaskFormerClipAdapter, RegionScores, build_clip_adapter, ensemble_scores
from ..clip.adapter import cpu_has_native
from .outputs import TaskThresholds, postprocess_image
from .vocabulary import INSTANCE, PANOPTIC, SEMANTIC, TASK_TARGET_KEYS, Vocabulary

INFERENCE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}  # TEST.AMP.DTYPE
logger = logging.getLogger(__name__)


@dataclass
class TaskPrediction:
    """One image's raw results for one task (all at the model's input resolution).

    ``class_embed`` [Q, D]; ``pred_logits`` [Q, K+1]; ``pred_masks`` [Q, h/4, w/4] (padded);
    ``aux_pred_logits`` / ``aux_pred_masks`` per decoder layer; ``mask_logits`` [Q, H, W];
    ``region`` CLIP region scores (None without the ensemble); ``scores`` [Q', K] ensembled
    class scores and ``keep`` bool [Q] (the queries they belong to).
    """

    class_embed: Tensor
    pred_logits: Tensor
    pred_masks: Tensor
    aux_pred_logits: list[Tensor]
    aux_pred_masks: list[Tensor]
    mask_logits: Tensor
    region: RegionScores | None
    scores: Tensor
    keep: Tensor


class OpenVocabulary(nn.Module):
    """Batch items per docs/architecture.md: ``image`` uint8 [3, H, W]; training adds
    ``sem_instances`` / ``ins_instances`` / ``pan_instances``; eval uses ``height``/``width``.
    Training → weighted losses; eval → per image ``sem_seg`` (+ ``panoptic_seg``, ``instances``,
    ``entity`` when enabled)."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        clip_adapter: MaskFormerClipAdapter,
        task_names: Sequence[str],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        clip_ensemble: bool = True,
        clip_ensemble_weight: float = 0.8,
        region_topk: int = 0,
        instance_on: bool = True,
        panoptic_on: bool = True,
        entity_on: bool = False,
        thresholds: TaskThresholds = TaskThresholds(),
        seed: int = 0,
        inference_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        unknown = [t for t in task_names if t not in TASK_TARGET_KEYS]
        if not task_names or unknown:
            raise FreeSegError(f"INPUT.TASK_NAME {list(task_names)} must list tasks from {sorted(TASK_TARGET_KEYS)}")
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.clip_adapter = clip_adapter
        self.task_names = list(task_names)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.size_divisibility = size_divisibility
        self.clip_ensemble = clip_ensemble
        self.clip_ensemble_weight = clip_ensemble_weight
        self.region_topk = region_topk
        self.eval_tasks = [SEMANTIC] + [t for t, on in ((INSTANCE, instance_on), (PANOPTIC, panoptic_on)) if on and t in self.task_names]
        self.entity_on = entity_on
        self.thresholds = thresholds
        # One task per iteration per rank (FreeSeg: random.choice, ranks seeded SEED + rank).
        self._task_rng = random.Random(seed + comm.get_rank())
        self.vocabulary: Vocabulary | None = None
        self.inference_dtype = inference_dtype

    @classmethod
    def from_config(cls, cfg: Any) -> "OpenVocabulary":
        from ...losses import build_criterion
        from ..backbone.build import build_backbone
        from ..heads import build_sem_seg_head

        mf, ca = cfg.MODEL.MASK_FORMER, cfg.MODEL.CLIP_ADAPTER
        if cfg.MODEL.SEM_SEG_HEAD.EMBEDDING_DIM != ca.PROMPT_DIM:
            raise FreeSegError(
                f"MODEL.SEM_SEG_HEAD.EMBEDDING_DIM {cfg.MODEL.SEM_SEG_HEAD.EMBEDDING_DIM} != "
                f"MODEL.CLIP_ADAPTER.PROMPT_DIM {ca.PROMPT_DIM}: class embeddings are compared with CLIP text features"
            )
        backbone = build_backbone(cfg)
        inference_dtype = None
        if cfg.TEST.AMP.ENABLED:
            name = str(cfg.TEST.AMP.DTYPE)
            if name not in INFERENCE_DTYPES:
                raise FreeSegError(f"TEST.AMP.DTYPE={name!r} is unknown; use one of {sorted(INFERENCE_DTYPES)}")
            inference_dtype = INFERENCE_DTYPES[name]
        seed = int(cfg.SEED) if int(cfg.SEED) >= 0 else int.from_bytes(os.urandom(4), "little")
        return cls(
            backbone=backbone,
            sem_seg_head=build_sem_seg_head(cfg, backbone.output_shape()),
            criterion=build_criterion(cfg),
            clip_adapter=build_clip_adapter(cfg, stage2=True),
            task_names=list(cfg.INPUT.TASK_NAME),
            pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
            pixel_std=list(cfg.MODEL.PIXEL_STD),
            size_divisibility=int(mf.SIZE_DIVISIBILITY),
            clip_ensemble=bool(ca.CLIP_ENSEMBLE),
            clip_ensemble_weight=float(ca.CLIP_ENSEMBLE_WEIGHT),
            region_topk=int(ca.REGION_TOPK),
            instance_on=bool(mf.TEST.INSTANCE_ON),
            panoptic_on=bool(mf.TEST.PANOPTIC_ON),
            entity_on=bool(mf.TEST.ENTITY_ON),
            thresholds=TaskThresholds(
                object_mask=float(mf.TEST.OBJECT_MASK_THRESHOLD),
                overlap=float(mf.TEST.OVERLAP_THRESHOLD),
                topk_per_image=int(mf.TEST.TEST_TOPK_PER_IMAGE),
            ),
            seed=seed,
            inference_dtype=inference_dtype,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def inference_dtype(self) -> torch.dtype | None:
        """``TEST.AMP``: None = fp32 inference; bfloat16 / float16 = backbone, pixel decoder and
        mask decoder under autocast in that dtype (text features, CLIP regions unless
        ``REGION_DTYPE`` says otherwise, ensemble and post-processing stay fp32)."""
        return self._inference_dtype

    @inference_dtype.setter
    def inference_dtype(self, dtype: torch.dtype | None) -> None:
        if dtype is not None and dtype not in INFERENCE_DTYPES.values():
            raise FreeSegError(f"inference dtype {dtype} is not one of {sorted(INFERENCE_DTYPES)} (or None)")
        self._inference_dtype = dtype
        self._warned_precision = False
        pixel_decoder = getattr(self.sem_seg_head, "pixel_decoder", None)
        if pixel_decoder is not None and hasattr(pixel_decoder, "low_precision_inference"):
            pixel_decoder.low_precision_inference = dtype is not None

    def _network_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the segmentation network under ``TEST.AMP``, else a no-op."""
        dtype = self._inference_dtype
        if dtype is None:
            return contextlib.nullcontext()
        if not self._warned_precision and self.device.type == "cpu":
            self._warned_precision = True
            if not cpu_has_native(dtype):
                logger.warning(f"TEST.AMP.DTYPE {str(dtype).split('.')[-1]}: this CPU has no native support for it, "
                               "so inference will be slower than float32; set TEST.AMP.ENABLED False")
        return torch.autocast(self.device.type, dtype=dtype)

    @staticmethod
    def _float32(outputs: dict[str, Any]) -> dict[str, Any]:
        """Decoder outputs computed under autocast, back in fp32 for the post-processing."""
        def cast(out: dict[str, Any]) -> dict[str, Any]:
            return {k: v.float() if isinstance(v, Tensor) and v.is_floating_point() else v for k, v in out.items()}

        converted = cast(outputs)
        if "aux_outputs" in outputs:
            converted["aux_outputs"] = [cast(a) for a in outputs["aux_outputs"]]
        return converted

    # -- vocabulary --------------------------------------------------------------------------
    def set_vocabulary(
        self,
        class_names: Sequence[str],
        trainable_flag: Sequence[int] | None = None,
        thing_flags: Sequence[int] | None = None,
    ) -> None:
        """Segment ``class_names`` from now on. ``trainable_flag`` (1 = seen in training) steers
        the CLIP ensemble (None: all unseen); ``thing_flags`` (None: all things) the panoptic and
        instance outputs. Checked here, before any compute."""
        vocab = Vocabulary.create(class_names, trainable_flag, thing_flags)
        for task in self.task_names:
            self.clip_adapter.check_vocabulary(list(vocab.class_names), task)
        self.vocabulary = vocab

    def _vocab(self) -> Vocabulary:
        if self.vocabulary is None:
            raise FreeSegError("no vocabulary: call model.set_vocabulary(class_names) before running the model")
        return self.vocabulary

    # -- shared steps ------------------------------------------------------------------------
    def preprocess(self, batch: list[dict]) -> tuple[Tensor, list[tuple[int, int]]]:
        """ImageNet-normalise, zero-pad bottom/right to a common multiple of ``size_divisibility``.

        Returns ([B, 3, Hp, Wp], per-image (H, W))."""
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batch]
        sizes = [tuple(im.shape[-2:]) for im in images]
        d = max(self.size_divisibility, 1)
        hp = -(-max(s[0] for s in sizes) // d) * d
        wp = -(-max(s[1] for s in sizes) // d) * d
        padded = torch.stack([F.pad(im, (0, wp - im.shape[-1], 0, hp - im.shape[-2])) for im in images])
        return padded, sizes

    def to_logits(self, outputs: dict[str, Any], text_features: Tensor) -> dict[str, Any]:
        """Class embeddings → logits 100 · normalize(e) @ textᵀ [B, Q, K+1], aux outputs too."""
        def convert(out: dict[str, Any]) -> dict[str, Any]:
            logits = self.clip_adapter.sim_logits(text_features, F.normalize(out["pred_logits"], dim=-1))
            return {**out, "pred_logits": logits, "class_embed": out["pred_logits"]}

        converted = convert(outputs)
        converted["aux_outputs"] = [convert(a) for a in outputs.get("aux_outputs", [])]
        return converted

    # -- training ----------------------------------------------------------------------------
    def forward(self, batch: list[dict]) -> dict[str, Tensor] | list[dict[str, Any]]:
        if self.training:
            return self.losses(batch, self._task_rng.choice(self.task_names))
        return self.inference(batch)

    def losses(self, batch: list[dict], task: str) -> dict[str, Tensor]:
        """Weighted losses of one training step on ``task`` (targets ``TASK_TARGET_KEYS[task]``)."""
        from ...losses import apply_loss_weights, prepare_targets

        vocab = self._vocab()
        if len(vocab.class_names) != self.criterion.num_classes:
            raise FreeSegError(
                f"training vocabulary has {len(vocab.class_names)} names but MODEL.SEM_SEG_HEAD.NUM_CLASSES is "
                f"{self.criterion.num_classes}; set_vocabulary with the training data set's classes"
            )
        key = TASK_TARGET_KEYS[task]
        missing = [x.get("file_name", i) for i, x in enumerate(batch) if key not in x]
        if missing:
            raise FreeSegError(f"training samples {missing[:3]} lack {key!r} for task {task!r}; use the full-task mapper")
        images, _ = self.preprocess(batch)
        text = self.clip_adapter.text_features(list(vocab.class_names), task)
        outputs = self.to_logits(self.sem_seg_head(self.backbone(images), text), text)
        instances = [{k: v.to(self.device) for k, v in x[key].items()} for x in batch]
        targets = prepare_targets(instances, tuple(images.shape[-2:]))
        return apply_loss_weights(self.criterion(outputs, targets), self.criterion.weight_dict)

    # -- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict_tasks(self, batch: list[dict], *, panoptic_only: bool = False) -> list[dict[str, TaskPrediction]]:
        """Raw per-task predictions for each image: backbone + pixel decoder once, then per task
        the text-conditioned decoder, CLIP region scores and ensemble.

        ``panoptic_only``: the panoptic task's scores will only feed the panoptic inference, so
        CLIP skips the regions of queries that cannot pass its score threshold whatever CLIP
        says (:meth:`_panoptic_candidates`); their scores are then not the exact ones (they stay
        at or below the threshold), while the panoptic result is the same.
        """
        vocab = self._vocab()
        names = list(vocab.class_names)
        images, sizes = self.preprocess(batch)
        if self._inference_dtype is not None:
            # oneDNN's bf16/fp16 convolutions are fastest channels-last (R101c backbone: 0.65 vs
            # 0.8 s); the fp32 path keeps its layout, and so its exact results
            images = images.contiguous(memory_format=torch.channels_last)
        with self._network_autocast():
            encoded = self.sem_seg_head.encode(self.backbone(images))
        results: list[dict[str, TaskPrediction]] = [{} for _ in batch]
        for task in self.eval_tasks:
            text = self.clip_adapter.text_features(names, task)  # fp32, cached
            with self._network_autocast():
                decoded = self.sem_seg_head.decode(encoded, text)
            if self._inference_dtype is not None:
                decoded = self._float32(decoded)
            outputs = self.to_logits(decoded, text)
            for i, x in enumerate(batch):
                prune = panoptic_only and task == PANOPTIC
                results[i][task] = self._predict_image(x, i, outputs, text, sizes[i], images.shape[-2:], vocab, prune)
        return results

    def _predict_image(self, sample, i, outputs, text, size, padded, vocab, prune=False) -> TaskPrediction:
        from ...postprocess import upsample_masks

        logits, masks = outputs["pred_logits"][i], outputs["pred_masks"][i]
        mask_logits = upsample_masks(masks, tuple(padded), size)  # [Q, H, W]
        probs = F.softmax(logits, dim=-1)[:, :-1]
        region, scores, keep = None, probs, torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
        if self.clip_ensemble:
            flags = None if vocab.trainable_flag is None else torch.tensor(vocab.trainable_flag, device=self.device)
            select = None
            if self.region_topk > 0:  # fast mode: only the most confident queries go through CLIP
                select = torch.zeros_like(keep)
                select[probs.max(dim=1).values.topk(min(self.region_topk, len(select))).indices] = True
            candidates = self._panoptic_candidates(probs, flags) if prune else None
            if candidates is not None:
                select = candidates if select is None else select & candidates
            image = sample["image"].to(self.device)
            region, clip_probs = self._region_probs(image, mask_logits, probs, text, select)
            scores, keep = ensemble_scores(probs, clip_probs, region.valid, flags, self.clip_ensemble_weight)
        return TaskPrediction(
            class_embed=outputs["class_embed"][i],
            pred_logits=logits,
            pred_masks=masks,
            aux_pred_logits=[a["pred_logits"][i] for a in outputs["aux_outputs"]],
            aux_pred_masks=[a["pred_masks"][i] for a in outputs["aux_outputs"]],
            mask_logits=mask_logits,
            region=region,
            scores=scores,
            keep=keep,
        )

    def _region_probs(
        self, image: Tensor, mask_logits: Tensor, probs: Tensor, text: Tensor, select: Tensor | None
    ) -> tuple[RegionScores, Tensor]:
        """CLIP's region scores and every query's CLIP probabilities c [Q, K] for the ensemble;
        ``select`` (bool [Q] or None = all): the queries whose regions go through CLIP."""
        if select is None:
            region = self.clip_adapter.classify_regions(image, mask_logits.sigmoid(), text)
            return region, region.probs
        # the full-resolution sigmoid of the chosen queries only (REGION_TOPK of 100 in the fast mode)
        chosen = select.nonzero().squeeze(1)
        region = self.clip_adapter.classify_regions(image, mask_logits[chosen].sigmoid(), text)
        region = region.spread(chosen, select.shape[0])
        # A query that CLIP skipped has no CLIP evidence: c = p makes its ensembled score p
        # itself. (c = 1, the original's value for empty masks, would rank it above the queries
        # that CLIP did score.) Empty masks keep c = 1 as in the original. (A query skipped as
        # no panoptic candidate scores p <= its bound: dropped still.) A mask is non-empty when
        # its most probable pixel passes the threshold (the sigmoid is monotonic).
        nonempty = mask_logits.flatten(1).amax(1).sigmoid() > self.clip_adapter.mask_thr
        return region, torch.where((~select & nonempty)[:, None], probs, region.probs)

    def _panoptic_candidates(self, probs: Tensor, flags: Tensor | None) -> Tensor | None:
        """bool [Q]: queries whose ensembled score can pass the panoptic threshold.

        The ensemble raises the segmenter's p to a power and multiplies by CLIP's c raised to a
        non-negative power (for 0 < weight <= 1); c <= 1, so the score with c = 1 bounds every
        score CLIP can give (IEEE products and powers are monotonic, so the bound holds in
        floats too). A query whose bound is not above ``OBJECT_MASK_THRESHOLD`` is dropped by the
        panoptic inference whatever its region looks like. None where no bound holds.
        """
        weight = self.clip_ensemble_weight
        if not 0.0 < weight <= 1.0:
            return None
        everything = torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
        bound, _ = ensemble_scores(probs, torch.ones_like(probs), everything, flags, weight)
        return bound.max(dim=1).values > self.thresholds.object_mask

    @torch.no_grad()
    def inference(self, batch: list[dict]) -> list[dict[str, Any]]:
        """Post-processed outputs per image (docs/architecture.md, "Model calling convention")."""
        vocab = self._vocab()
        results = []
        # the entity output ranks every panoptic query by its exact score: no pruning then
        for x, tasks in zip(batch, self.predict_tasks(batch, panoptic_only=not self.entity_on)):
            size = tuple(x["image"].shape[-2:])
            out_size = (int(x.get("height", size[0])), int(x.get("width", size[1])))
            results.append(postprocess_image(tasks, out_size, vocab, self.thresholds, self.entity_on))
        return results
