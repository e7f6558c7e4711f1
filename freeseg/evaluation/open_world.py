"""Open-world metrics of the other seed papers, both class-agnostic and computed with pycocotools.

**Unseen-class mask recall (GGN protocol, e.g. VOC → non-VOC on COCO).** Every predicted instance
mask is one class-agnostic proposal (category 0, ranked by score). Ground truth of unseen classes
(``trainable_flag`` 0) is the target; ground truth of seen classes is marked ``iscrowd=1``, which
makes pycocotools *ignore* a proposal matched to it (crowd IoU = intersection / proposal area), so
re-finding a seen object is neither rewarded nor punished. Crowd GT stays ignored. As in every
pycocotools-based AR evaluation, the per-image budget (top 10 / 100 by score) is applied before
matching, so ignored proposals still take budget slots. Reported: ``AR@10``, ``AR@100``,
``ARs@100``, ``ARm@100``, ``ARl@100`` (×100) under ``"open_world"``.

**Entity AP (Open-World Entity Segmentation).** The model's ``entity`` output (non-overlapping,
class-agnostic segments with scores) against every ground-truth panoptic segment (things and
stuff) as one category; crowd segments are ``iscrowd``. Reported: COCO ``AP``, ``AP50``, ``AP75``,
``APs``, ``APm``, ``APl``, ``AR100`` (×100) under ``"entity"``.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import pycocotools.mask as mask_util

from ..utils import comm
from ..utils.errors import FreeSegError
from .coco_utils import InstanceGroundTruth, encode_mask, run_coco_eval, stats_dict
from .evaluator import DatasetEvaluator
from .instance import instances_to_coco, number_images
from .panoptic import PanopticGroundTruth, unpack_panoptic_output
from .report import log_summary
from .sem_seg import image_name
from .splits import seen_unseen

logger = logging.getLogger(__name__)


class UnseenRecallEvaluator(DatasetEvaluator):
    """Class-agnostic mask AR@10/@100 on unseen-class ground truth, seen classes ignored."""

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        trainable_flag: Sequence[int],
        thing_ids: Sequence[int] | None = None,
        json_file: str | None = None,
        dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
        panoptic_json: str | None = None,
        panoptic_root: str | None = None,
    ) -> None:
        k = len(class_names)
        split = seen_unseen(k, trainable_flag)
        if split is None:
            raise FreeSegError("unseen-class recall needs the data set's trainable_flag")
        self._k = k
        self._seen = set(split[0])
        panoptic = PanopticGroundTruth(
            num_classes=k, panoptic_json=panoptic_json, panoptic_root=panoptic_root,
            dataset_id_to_contiguous_id=dataset_id_to_contiguous_id)
        self._gt = InstanceGroundTruth(
            num_classes=k, json_file=json_file,
            dataset_id_to_contiguous_id=dataset_id_to_contiguous_id,
            panoptic=panoptic, thing_ids=thing_ids)
        self.reset()

    state_attributes = ("_records",)

    def reset(self) -> None:
        self._records: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise FreeSegError(
                    f"model output for image {image_name(inp)} has no 'instances'; enable "
                    "MODEL.MASK_FORMER.TEST.INSTANCE_ON"
                )
            h, w, gt = self._gt.load(inp)
            gt = [{**a, "category_id": 0,
                   "iscrowd": 1 if a["category_id"] in self._seen else a["iscrowd"]} for a in gt]
            dt = instances_to_coco(out["instances"], h, w, self._k, inp, class_agnostic=True)
            self._records.append({"height": h, "width": w, "gt": gt, "dt": dt})

    def evaluate(self) -> dict[str, dict[str, Any]]:
        gathered = comm.gather(self._records)
        if not comm.is_main_process():
            return {}
        images, gts, dts = number_images([r for part in gathered for r in part])
        n_unseen = sum(1 for a in gts if not a["iscrowd"])
        if n_unseen == 0:
            logger.warning("no unseen-class ground truth: unseen recall is NaN")
        s = stats_dict(run_coco_eval(images, gts, dts, [0], max_dets=(1, 10, 100)))
        res = {"AR@10": s["AR10"], "AR@100": s["AR100"], "ARs@100": s["ARs"],
               "ARm@100": s["ARm"], "ARl@100": s["ARl"], "num_unseen_gt": n_unseen}
        log_summary("open_world", res, list(res))
        return {"open_world": res}


def entity_to_coco(out: Mapping[str, Any], height: int, width: int, inp: Mapping[str, Any]
                   ) -> list[dict]:
    """``out["entity"]`` = (int [H, W] ids, [{"id", "score"}]) → class-agnostic COCO results."""
    ids, segments = unpack_panoptic_output(out, "entity", inp)
    if ids.shape != (height, width):
        raise FreeSegError(
            f"entity prediction for image {image_name(inp)} is {ids.shape[0]}x{ids.shape[1]} but "
            f"its ground truth is {height}x{width}; return predictions at the input's size"
        )
    dts = []
    for s in segments:
        mask = ids == int(s["id"])
        if not mask.any():
            continue
        rle = encode_mask(mask)
        dts.append({"category_id": 0, "segmentation": rle, "score": float(s.get("score", 1.0)),
                    "bbox": [float(v) for v in mask_util.toBbox(rle)]})
    return dts


class EntityEvaluator(DatasetEvaluator):
    """Entity AP: class-agnostic COCO AP of entity masks against all panoptic GT segments."""

    def __init__(
        self,
        *,
        num_classes: int,
        panoptic_json: str | None = None,
        panoptic_root: str | None = None,
        dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
    ) -> None:
        self._gt = PanopticGroundTruth(
            num_classes=num_classes, panoptic_json=panoptic_json, panoptic_root=panoptic_root,
            dataset_id_to_contiguous_id=dataset_id_to_contiguous_id)
        self.reset()

    state_attributes = ("_records",)

    def reset(self) -> None:
        self._records: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            gt_ids, segs = self._gt.load(inp)
            h, w = gt_ids.shape
            gt = []
            for sid, s in segs.items():
                mask = gt_ids == sid
                if not mask.any():
                    continue
                rle = encode_mask(mask)
                gt.append({"category_id": 0, "segmentation": rle, "iscrowd": s["iscrowd"],
                           "area": float(mask_util.area(rle))})
            self._records.append({"height": h, "width": w, "gt": gt,
                                  "dt": entity_to_coco(out, h, w, inp)})

    def evaluate(self) -> dict[str, dict[str, Any]]:
        gathered = comm.gather(self._records)
        if not comm.is_main_process():
            return {}
        images, gts, dts = number_images([r for part in gathered for r in part])
        s = stats_dict(run_coco_eval(images, gts, dts, [0]))
        res = {k: s[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}
        log_summary("entity", res, list(res))
        return {"entity": res}

