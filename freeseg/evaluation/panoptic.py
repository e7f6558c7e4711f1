"""Panoptic evaluator: PQ/SQ/RQ (all, things, stuff, seen, unseen) from in-memory predictions.

Per-image PQ counts are computed in ``process`` (the algorithm of :mod:`.pq`, identical to
panopticapi's ``pq_compute``) and summed, so nothing large is kept in memory and no files need to
be written; PQ sums over images, so the result equals running ``pq_compute`` on files. With
``write_predictions`` the predictions are also saved in COCO panoptic format (PNG + JSON) under
``output_dir/panoptic_seg`` for the official tool.
"""
from __future__ import annotations

import io
import json
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..utils import comm
from ..utils.errors import FreeSegError
from .evaluator import DatasetEvaluator
from .pq import PQStat, id2rgb, pq_single_image, read_panoptic_png, summarize
from .report import log_summary, save_per_class_csv
from .sem_seg import image_name
from .splits import seen_unseen

logger = logging.getLogger(__name__)

Segments = dict[int, dict[str, Any]]


class PanopticGroundTruth:
    """Reads an image's panoptic ground truth with contiguous category ids.

    From the input dict's ``pan_seg_file_name`` and ``segments_info`` (contiguous ids, as the
    data set dicts carry them), or else from a COCO panoptic JSON + PNG folder (``panoptic_json``,
    ``panoptic_root``; data set category ids converted with ``dataset_id_to_contiguous_id``),
    looked up by ``image_id`` or file-name stem.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        panoptic_json: str | None = None,
        panoptic_root: str | None = None,
        dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
    ) -> None:
        self._k = num_classes
        self._root = panoptic_root
        self._by_id: dict[Any, dict] = {}
        self._by_stem: dict[str, dict] = {}
        self._map = {int(k): int(v) for k, v in (dataset_id_to_contiguous_id or {}).items()}
        self._warned: set[int] = set()
        if panoptic_json:
            if not os.path.isfile(panoptic_json):
                raise FreeSegError(
                    f"panoptic ground-truth JSON not found: {panoptic_json}; prepare the data set "
                    "or fix its panoptic_json"
                )
            if not panoptic_root or not self._map:
                raise FreeSegError(
                    "panoptic_json needs panoptic_root and the dataset-id -> contiguous-id maps "
                    "in the data set's metadata"
                )
            with open(panoptic_json) as f:
                for ann in json.load(f)["annotations"]:
                    self._by_id[ann["image_id"]] = ann
                    self._by_stem[os.path.splitext(ann["file_name"])[0]] = ann

    @property
    def has_json(self) -> bool:
        return bool(self._by_id)

    def _from_json(self, inp: Mapping[str, Any]) -> tuple[str, list[dict]] | None:
        ann = self._by_id.get(inp.get("image_id"))
        if ann is None and inp.get("file_name"):
            ann = self._by_stem.get(os.path.splitext(os.path.basename(inp["file_name"]))[0])
        if ann is None:
            return None
        segs = []
        for s in ann["segments_info"]:
            if s["category_id"] not in self._map:
                # The data loader's rule (FreeSeg's): segments of classes outside the data set
                # are dropped; their pixels stay non-void, as panopticapi treats them.
                if s["category_id"] not in self._warned:
                    self._warned.add(s["category_id"])
                    logger.warning("panoptic ground truth: category id %s is not in the data set; "
                                   "its segments are dropped", s["category_id"])
                continue
            segs.append({**s, "category_id": self._map[s["category_id"]]})
        return os.path.join(self._root or "", ann["file_name"]), segs

    def load(self, inp: Mapping[str, Any]) -> tuple[np.ndarray, Segments]:
        """(int64 ids [H, W], id -> {"category_id", "iscrowd", "area", ...}) of one input.

        The input's own ``pan_seg_file_name`` + ``segments_info`` (contiguous ids) come first;
        the panoptic JSON is the fallback.
        """
        if inp.get("pan_seg_file_name") and "segments_info" in inp:
            found = inp["pan_seg_file_name"], list(inp["segments_info"])
        else:
            found = self._from_json(inp) if self._by_id else None
        if found is None:
            raise FreeSegError(
                f"image {image_name(inp)} has no panoptic ground truth (no 'pan_seg_file_name'/"
                "'segments_info', not in panoptic_json); evaluate on a panoptic data set"
            )
        path, segs = found
        if not os.path.isfile(path):
            raise FreeSegError(
                f"panoptic ground truth of image {image_name(inp)} not found: {path}; prepare "
                "the data set (see `freeseg prepare`) or fix its panoptic_root"
            )
        ids = read_panoptic_png(path)
        out: Segments = {}
        for s in segs:
            cat = int(s["category_id"])
            if not 0 <= cat < self._k:
                raise FreeSegError(
                    f"panoptic ground truth of image {image_name(inp)} has unknown class id {cat} "
                    f"(data set has {self._k} classes); check segments_info"
                )
            area = s.get("area")
            area = int((ids == s["id"]).sum()) if area is None else area
            out[int(s["id"])] = {"category_id": cat, "iscrowd": int(s.get("iscrowd", 0)),
                                 "area": area, "isthing": s.get("isthing")}
        return ids, out


def unpack_panoptic_output(out: Mapping[str, Any], key: str, inp: Mapping[str, Any]):
    """(int64 ids [H, W], list of segment dicts) from ``out[key]`` = (id map, segments_info)."""
    if key not in out:
        raise FreeSegError(
            f"model output for image {image_name(inp)} has no '{key}'; enable it in the config "
            "(MODEL.MASK_FORMER.TEST.*_ON)"
        )
    ids, segments = out[key]
    ids_t = torch.as_tensor(ids)
    if ids_t.dtype.is_floating_point or ids_t.dtype == torch.bool or ids_t.dim() != 2:
        raise FreeSegError(
            f"'{key}' id map of image {image_name(inp)} must be an integer [H, W] tensor, got "
            f"{ids_t.dtype} {tuple(ids_t.shape)}"
        )
    if segments is None:
        raise FreeSegError(f"'{key}' of image {image_name(inp)} has no segments_info list")
    return ids_t.cpu().numpy().astype(np.int64), list(segments)


class PanopticEvaluator(DatasetEvaluator):
    """PQ, SQ, RQ for all / things / stuff / seen / unseen classes (×100).

    ``process`` takes ``outputs[i]["panoptic_seg"]`` = (int32 [H, W] ids, 0 = void;
    ``segments_info`` = [{"id", "category_id" (contiguous), ...}]). ``evaluate`` returns
    ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", ..., "PQ_st", ..., "PQ-seen", "PQ-unseen",
    ..., "PQ-<class>"}}``. Seen/unseen come from ``trainable_flag`` (1 = seen) and are averaged
    like ``All`` (over classes with any TP/FP/FN).
    """

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        thing_ids: Sequence[int],
        trainable_flag: Sequence[int] | None = None,
        panoptic_json: str | None = None,
        panoptic_root: str | None = None,
        dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
        output_dir: str | None = None,
        write_predictions: bool = False,
    ) -> None:
        self._names = list(class_names)
        k = len(self._names)
        self._isthing = {c: c in set(int(t) for t in thing_ids) for c in range(k)}
        self._split = seen_unseen(k, trainable_flag)
        self._gt = PanopticGroundTruth(
            num_classes=k, panoptic_json=panoptic_json, panoptic_root=panoptic_root,
            dataset_id_to_contiguous_id=dataset_id_to_contiguous_id,
        )
        self._to_dataset = {v: k_ for k_, v in (dataset_id_to_contiguous_id or {}).items()}
        self._output_dir = output_dir
        self._write = write_predictions and output_dir is not None
        self.reset()

    state_attributes = ("_stat", "_predictions")

    def reset(self) -> None:
        self._stat = PQStat()
        self._predictions: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            pred_ids, segments = unpack_panoptic_output(out, "panoptic_seg", inp)
            gt_ids, gt_segs = self._gt.load(inp)
            pred_segs = {int(s["id"]): {"category_id": int(s["category_id"])} for s in segments}
            self._stat += pq_single_image(
                gt_ids, gt_segs, pred_ids, pred_segs, self._isthing, image_name(inp)
            )
            if self._write:
                self._keep_prediction(inp, pred_ids, pred_segs)

    def _keep_prediction(self, inp: Mapping[str, Any], ids: np.ndarray, segs: Segments) -> None:
        buf = io.BytesIO()
        Image.fromarray(id2rgb(ids)).save(buf, format="PNG")
        stem = os.path.splitext(os.path.basename(str(inp.get("file_name", inp.get("image_id")))))[0]
        self._predictions.append({
            "image_id": inp.get("image_id"),
            "file_name": stem + ".png",
            "png": buf.getvalue(),
            "segments_info": [
                {"id": i, "category_id": self._to_dataset.get(s["category_id"], s["category_id"])}
                for i, s in segs.items()
            ],
        })

    def _save_predictions(self, predictions: list[dict]) -> None:
        folder = os.path.join(self._output_dir, "panoptic_seg")
        os.makedirs(folder, exist_ok=True)
        anns = []
        for p in predictions:
            with open(os.path.join(folder, p["file_name"]), "wb") as f:
                f.write(p.pop("png"))
            anns.append(p)
        with open(os.path.join(folder, "predictions.json"), "w") as f:
            json.dump({"annotations": anns}, f)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        gathered = comm.gather((self._stat, self._predictions))
        if not comm.is_main_process():
            return {}
        stat = PQStat()
        for s, _ in gathered:
            stat += s
        r = summarize(stat, self._isthing)
        res: dict[str, Any] = {}
        for short, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            for m in ("pq", "sq", "rq"):
                res[m.upper() + short] = 100 * r[name][m]
        groups = {}
        if self._split is not None:
            groups = {"seen": self._split[0], "unseen": self._split[1]}
        for gname, ids in groups.items():
            avg, _ = stat.average(ids)
            for m in ("pq", "sq", "rq"):
                res[f"{m.upper()}-{gname}"] = 100 * avg[m]
        for c, name in enumerate(self._names):
            res[f"PQ-{name}"] = 100 * r["per_class"][c]["pq"]
        log_summary("panoptic_seg", res, ["PQ", "SQ", "RQ", "PQ_th", "PQ_st", "PQ-seen",
                                          "PQ-unseen"])
        if self._output_dir:
            flags = [None] * len(self._names)
            if self._split is not None:
                for c in self._split[0]:
                    flags[c] = 1
                for c in self._split[1]:
                    flags[c] = 0
            save_per_class_csv(
                os.path.join(self._output_dir, "panoptic_seg_per_class.csv"),
                ["class_id", "class", "isthing", "seen", "PQ", "SQ", "RQ", "TP", "FP", "FN"],
                [[c, n, int(self._isthing[c]), flags[c],
                  *(100 * r["per_class"][c][m] for m in ("pq", "sq", "rq")),
                  stat.per_cat[c].tp, stat.per_cat[c].fp, stat.per_cat[c].fn]
                 for c, n in enumerate(self._names)],
            )
            if self._write:
                self._save_predictions([p for _, preds in gathered for p in preds])
        return {"panoptic_seg": res}
