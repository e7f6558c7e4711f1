"""What the demo writes per image: overlay pictures and machine-readable results.

For an image ``<stem>`` and the tasks asked for:

| task | files |
|---|---|
| semantic | ``<stem>_semantic.png`` (overlay + legend), ``<stem>_semantic_labels.png`` (class index per pixel: uint8, uint16 when there are more than 255 classes) |
| panoptic | ``<stem>_panoptic.png`` (overlay), ``<stem>_panoptic_ids.png`` (COCO panoptic PNG, id = R + 256·G + 256²·B, 0 = void), ``<stem>_panoptic.json`` (COCO panoptic annotation with ``segments_info``) |
| instance | ``<stem>_instances.png`` (overlay), ``<stem>_instances.json`` (COCO results: RLE masks, scores, XYWH boxes) |
| entity | ``<stem>_entity.png`` (overlay), ``<stem>_entity_ids.png`` (as panoptic), ``<stem>_entity.json`` |

Category ids in the JSON files are the class's index in the vocabulary (0-based), and every
record also carries ``category_name``; ``vocabulary.json`` in the output folder lists the
classes with their colours once per run. Each file is written under a temporary name and
renamed, and ``demo_done.txt`` lists the inputs finished (:class:`RunLog`), so the same command
run again after an interruption continues with the first unfinished input.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_util

from ..utils.colors import id_to_rgb
from ..utils.files import atomic_write
from ..utils.visualizer import Visualizer
from .predictor import DemoVocabulary

TASKS = ("semantic", "instance", "panoptic", "entity")
# the files of one image per task (<stem>_<suffix>), in the order they are written
FILE_SUFFIXES = {
    "semantic": ("semantic_labels.png", "semantic.png"),
    "panoptic": ("panoptic_ids.png", "panoptic.json", "panoptic.png"),
    "instance": ("instances.json", "instances.png"),
    "entity": ("entity_ids.png", "entity.json", "entity.png"),
}


def semantic_label_map(sem_seg: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
    """argmax over classes of ``sem_seg`` [K, h, w] -> uint8 [H, W] (uint16 when K > 255, so
    that no class index collides with 255, the usual "ignore" value), enlarged to ``size``
    (nearest neighbour) when the predictor post-processed a large image at a reduced size."""
    from ..postprocess import resize_nearest

    dtype = np.uint8 if sem_seg.shape[0] <= 255 else np.uint16
    labels = sem_seg.argmax(dim=0)
    if size is not None:
        labels = resize_nearest(labels, *size)
    return labels.numpy().astype(dtype)


def mask_bbox_xywh(mask: np.ndarray) -> list[int]:
    """COCO [x, y, w, h] of a bool [H, W] mask ([0, 0, 0, 0] when empty)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def categories(vocab: DemoVocabulary) -> list[dict[str, Any]]:
    return [{"id": k, "name": n, "isthing": int(vocab.is_thing(k))} for k, n in enumerate(vocab.class_names)]


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO RLE (``counts`` as str, JSON-ready) of bool masks [N, H, W]."""
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def panoptic_json(
    ids: np.ndarray, segments: Sequence[dict], vocab: DemoVocabulary, image_id: str, file_name: str
) -> dict[str, Any]:
    """COCO panoptic annotation for one image (``segments_info`` plus the categories)."""
    info = []
    for seg in segments:
        mask = ids == int(seg["id"])
        k = int(seg["category_id"])
        info.append({
            "id": int(seg["id"]),
            "category_id": k,
            "category_name": vocab.class_names[k],
            "isthing": int(bool(seg.get("isthing", vocab.is_thing(k)))),
            "iscrowd": 0,
            "area": int(mask.sum()),
            "bbox": mask_bbox_xywh(mask),
            "score": float(seg.get("score", 1.0)),
        })
    h, w = ids.shape
    return {"image_id": image_id, "file_name": file_name, "height": h, "width": w,
            "segments_info": info, "categories": categories(vocab)}


def instances_json(
    instances: dict[str, torch.Tensor], vocab: DemoVocabulary, image_id: str, size: tuple[int, int]
) -> dict[str, Any]:
    """COCO-style instance results: RLE ``segmentation``, ``score``, XYWH ``bbox``."""
    masks = instances["pred_masks"].numpy().astype(bool)
    boxes = instances["pred_boxes"].numpy().astype(np.float64)
    anns = []
    for i, rle in enumerate(encode_rle(masks)):
        k = int(instances["pred_classes"][i])
        x0, y0, x1, y1 = boxes[i]
        anns.append({
            "id": i + 1,
            "image_id": image_id,
            "category_id": k,
            "category_name": vocab.class_names[k],
            "score": float(instances["scores"][i]),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": int(masks[i].sum()),
            "segmentation": rle,
        })
    return {"image_id": image_id, "height": size[0], "width": size[1],
            "annotations": anns, "categories": categories(vocab)}


def filter_instances(instances: dict[str, torch.Tensor], threshold: float) -> dict[str, torch.Tensor]:
    """Instances with score ≥ ``threshold``."""
    keep = instances["scores"] >= threshold
    return {k: v[keep] for k, v in instances.items()}


def filter_segments(ids: torch.Tensor, segments: Sequence[dict], threshold: float) -> tuple[np.ndarray, list[dict]]:
    """Segments with score ≥ ``threshold``; dropped ones become 0 (void) in the id map."""
    ids_np = ids.numpy().astype(np.int64)
    kept = [s for s in segments if float(s.get("score", 1.0)) >= threshold]
    keep_ids = np.array([int(s["id"]) for s in kept], dtype=np.int64)
    ids_np = np.where(np.isin(ids_np, keep_ids), ids_np, 0)
    return ids_np, [dict(s) for s in kept]


class ResultWriter:
    """Writes every output of one image for the chosen tasks into ``out_dir``.

    Args:
        out_dir: output folder (created).
        vocabulary: the run's classes.
        tasks: subset of :data:`TASKS`.
        threshold: minimum score of instances and panoptic/entity segments (``--confidence-threshold``).
    """

    def __init__(self, out_dir: str, vocabulary: DemoVocabulary, tasks: Sequence[str], threshold: float) -> None:
        self.out_dir = out_dir
        self.vocab = vocabulary
        self.tasks = list(tasks)
        self.threshold = threshold
        self.visualizer = Visualizer(vocabulary.class_names)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "vocabulary.json"), "w") as f:
            classes = [
                {"id": k, "name": n, "isthing": int(vocabulary.is_thing(k)), "color": [int(c) for c in self.visualizer.colors[k]]}
                for k, n in enumerate(vocabulary.class_names)
            ]
            json.dump({"classes": classes}, f, indent=1)

    def _path(self, stem: str, suffix: str) -> str:
        return os.path.join(self.out_dir, f"{stem}_{suffix}")

    def files(self, stem: str) -> list[str]:
        """The paths :meth:`write` writes for the image ``stem``."""
        return [self._path(stem, suffix) for task in self.tasks for suffix in FILE_SUFFIXES[task]]

    def write(self, stem: str, image: np.ndarray, output: dict[str, Any]) -> list[str]:
        """Write the files of one image (uint8 RGB [H, W, 3] and its model output); returns paths."""
        written: list[str] = []

        def save_png(suffix: str, array: np.ndarray) -> None:
            path = self._path(stem, suffix)
            with atomic_write(path, durable=False) as f:
                Image.fromarray(array).save(f, format="PNG")
            written.append(path)

        def save_json(suffix: str, obj: Any) -> None:
            path = self._path(stem, suffix)
            with atomic_write(path, "w", durable=False) as f:
                json.dump(obj, f)
            written.append(path)

        if "semantic" in self.tasks:
            labels = semantic_label_map(output["sem_seg"], image.shape[:2])
            save_png("semantic_labels.png", labels)
            save_png("semantic.png", self.visualizer.semantic(image, labels))
        if "panoptic" in self.tasks:
            ids, segments = filter_segments(*output["panoptic_seg"], self.threshold)
            save_png("panoptic_ids.png", id_to_rgb(ids))
            save_json("panoptic.json", panoptic_json(ids, segments, self.vocab, stem, f"{stem}_panoptic_ids.png"))
            save_png("panoptic.png", self.visualizer.panoptic(image, ids, segments))
        if "instance" in self.tasks:
            inst = filter_instances(output["instances"], self.threshold)
            save_json("instances.json", instances_json(inst, self.vocab, stem, image.shape[:2]))
            masks = inst["pred_masks"].numpy().astype(bool)
            save_png("instances.png", self.visualizer.instances(image, masks, inst["pred_classes"].tolist(), inst["scores"].tolist()))
        if "entity" in self.tasks:
            ids, segments = filter_segments(*output["entity"], self.threshold)
            save_png("entity_ids.png", id_to_rgb(ids))
            info = [{"id": int(s["id"]), "score": float(s.get("score", 1.0)), "area": int((ids == s["id"]).sum()),
                     "bbox": mask_bbox_xywh(ids == s["id"])} for s in segments]
            save_json("entity.json", {"image_id": stem, "file_name": f"{stem}_entity_ids.png", "segments_info": info})
            save_png("entity.png", self.visualizer.entity(image, ids, segments))
        return written

    def overlay(self, image: np.ndarray, output: dict[str, Any], task: str) -> np.ndarray:
        """The overlay picture of one task without writing anything (video frames)."""
        if task == "semantic":
            return self.visualizer.semantic(image, semantic_label_map(output["sem_seg"], image.shape[:2]), legend=False)
        if task == "panoptic":
            return self.visualizer.panoptic(image, *filter_segments(*output["panoptic_seg"], self.threshold), legend=False)
        if task == "instance":
            inst = filter_instances(output["instances"], self.threshold)
            return self.visualizer.instances(image, inst["pred_masks"].numpy().astype(bool), inst["pred_classes"].tolist(), inst["scores"].tolist())
        return self.visualizer.entity(image, *filter_segments(*output["entity"], self.threshold))


class RunLog:
    """``demo_done.txt`` in the output folder: the inputs that a run with these settings finished.

    Its first line is the settings' fingerprint (config, weights, vocabulary, tasks, thresholds);
    a run with other settings, or with ``fresh``, starts the log afresh and so redoes every input
    (rewriting its files). An input counts as done when it is listed and all its files exist.

    Args:
        out_dir: the output folder (exists).
        fingerprint: one line identifying the settings.
        fresh: forget what earlier runs finished.
    """

    NAME = "demo_done.txt"

    def __init__(self, out_dir: str, fingerprint: str, fresh: bool = False) -> None:
        self.path = os.path.join(out_dir, self.NAME)
        lines: list[str] = []
        if not fresh and os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        self.finished = set(lines[1:]) if lines[:1] == [fingerprint] else set()
        if not self.finished:
            with atomic_write(self.path, "w", durable=False) as f:
                f.write(fingerprint + "\n")

    def is_done(self, key: str, files: Sequence[str]) -> bool:
        return key in self.finished and all(os.path.isfile(p) for p in files)

    def add(self, key: str) -> None:
        """Record ``key`` (one line, appended after the input's files are complete)."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(key + "\n")
        self.finished.add(key)
