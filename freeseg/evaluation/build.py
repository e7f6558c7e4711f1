"""``build_evaluator(cfg, dataset_name)``: the evaluators a data set's ``evaluator_type`` calls for.

The only place here that reads config and metadata; evaluator constructors take plain values.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from ..data.catalog import Metadata, MetadataCatalog
from ..utils.errors import ConfigError, closest
from .classification import ClassificationEvaluator
from .evaluator import DatasetEvaluator, DatasetEvaluators
from .instance import InstanceSegEvaluator
from .open_world import EntityEvaluator, UnseenRecallEvaluator
from .panoptic import PanopticEvaluator
from .sem_seg import SemSegEvaluator

logger = logging.getLogger(__name__)


def _classes(meta: Metadata) -> list[str]:
    return list(meta.stuff_classes)


def _thing_ids(meta: Metadata) -> list[int]:
    return sorted(int(v) for v in (meta.get("thing_dataset_id_to_contiguous_id") or {}).values())


def _dataset_id_map(meta: Metadata) -> dict[int, int]:
    """data set id -> contiguous id over things and stuff (one contiguous space)."""
    out = dict(meta.get("stuff_dataset_id_to_contiguous_id") or {})
    out.update(meta.get("thing_dataset_id_to_contiguous_id") or {})
    return {int(k): int(v) for k, v in out.items()}


def _instance_json(meta: Metadata) -> str | None:
    path = meta.get("json_file")
    if path and os.path.isfile(path):
        return path
    if path:
        logger.info("instance JSON %s absent: instance ground truth comes from the panoptic "
                    "annotations (thing segments)", path)
    return None


def _semantic(meta: Metadata, out_dir: str) -> SemSegEvaluator:
    return SemSegEvaluator(
        class_names=_classes(meta), ignore_label=meta.get("ignore_label", 255),
        evaluation_set=meta.get("evaluation_set"), trainable_flag=meta.get("trainable_flag"),
        output_dir=out_dir,
    )


def _panoptic_family(meta: Metadata, tcfg: Any, out_dir: str) -> list[DatasetEvaluator]:
    """Panoptic data sets: one evaluator per enabled output (MODEL.MASK_FORMER.TEST.*_ON)."""
    common = dict(panoptic_json=meta.get("panoptic_json"), panoptic_root=meta.get("panoptic_root"),
                  dataset_id_to_contiguous_id=_dataset_id_map(meta))
    flags = meta.get("trainable_flag")
    evs: list[DatasetEvaluator] = []
    if tcfg.SEMANTIC_ON:
        evs.append(_semantic(meta, out_dir))
    if tcfg.PANOPTIC_ON:
        evs.append(PanopticEvaluator(class_names=_classes(meta), thing_ids=_thing_ids(meta),
                                     trainable_flag=flags, output_dir=out_dir, **common))
    if tcfg.INSTANCE_ON:
        evs.append(InstanceSegEvaluator(class_names=_classes(meta), thing_ids=_thing_ids(meta),
                                        trainable_flag=flags, json_file=_instance_json(meta),
                                        output_dir=out_dir, **common))
        if flags is not None and not all(flags):
            evs.append(UnseenRecallEvaluator(class_names=_classes(meta), trainable_flag=flags,
                                             thing_ids=_thing_ids(meta),
                                             json_file=_instance_json(meta), **common))
    if tcfg.ENTITY_ON:
        evs.append(EntityEvaluator(num_classes=len(_classes(meta)), **common))
    return evs


def _sem_seg_type(meta: Metadata, cfg: Any, out_dir: str) -> list[DatasetEvaluator]:
    return [_semantic(meta, out_dir)]


def _coco_panoptic_type(meta: Metadata, cfg: Any, out_dir: str) -> list[DatasetEvaluator]:
    return _panoptic_family(meta, cfg.MODEL.MASK_FORMER.TEST, out_dir)


def _ade_panoptic_type(meta: Metadata, cfg: Any, out_dir: str) -> list[DatasetEvaluator]:
    # FreeSeg always scores ADE's semantic maps; the other tasks follow the TEST.*_ON flags.
    evs = _panoptic_family(meta, cfg.MODEL.MASK_FORMER.TEST, out_dir)
    if not any(isinstance(e, SemSegEvaluator) for e in evs):
        evs.insert(0, _semantic(meta, out_dir))
    return evs


def _coco_instance_type(meta: Metadata, cfg: Any, out_dir: str) -> list[DatasetEvaluator]:
    flags = meta.get("trainable_flag")
    common = dict(class_names=_classes(meta), json_file=meta.get("json_file"),
                  dataset_id_to_contiguous_id=_dataset_id_map(meta))
    evs: list[DatasetEvaluator] = [InstanceSegEvaluator(
        thing_ids=_thing_ids(meta) or range(len(_classes(meta))), trainable_flag=flags,
        output_dir=out_dir, **common)]
    if flags is not None and not all(flags):
        evs.append(UnseenRecallEvaluator(trainable_flag=flags, **common))
    return evs


def _classification_type(meta: Metadata, cfg: Any, out_dir: str) -> list[DatasetEvaluator]:
    return [ClassificationEvaluator(
        class_names=_classes(meta), evaluation_set=meta.get("evaluation_set"),
        trainable_flag=meta.get("trainable_flag"), output_dir=out_dir)]


EVALUATOR_TYPES: dict[str, Callable[[Metadata, Any, str], list[DatasetEvaluator]]] = {
    "sem_seg": _sem_seg_type,
    "coco_panoptic_seg": _coco_panoptic_type,
    "ade20k_panoptic_seg": _ade_panoptic_type,
    "coco": _coco_instance_type,
    "classification": _classification_type,
}


def build_evaluator(cfg: Any, dataset_name: str, output_dir: str | None = None
                    ) -> DatasetEvaluators:
    """Evaluators for ``dataset_name`` (by its metadata's ``evaluator_type``), run as one.

    Results go to ``output_dir`` (default ``cfg.OUTPUT_DIR/inference``): ``results.json`` and the
    per-class CSV files. Use one folder per data set when testing on several.
    """
    meta = MetadataCatalog.get(dataset_name)
    etype = meta.get("evaluator_type")
    if etype not in EVALUATOR_TYPES:
        hint = closest(str(etype), EVALUATOR_TYPES)
        raise ConfigError(
            f"data set '{dataset_name}' has evaluator_type {etype!r}; expected one of "
            f"{sorted(EVALUATOR_TYPES)}" + (f" (did you mean '{hint}'?)" if hint else "")
        )
    out_dir = output_dir or os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluators = EVALUATOR_TYPES[etype](meta, cfg, out_dir)
    if not evaluators:
        raise ConfigError(
            f"no evaluator for data set '{dataset_name}' ({etype}): enable an output with "
            "MODEL.MASK_FORMER.TEST.SEMANTIC_ON / PANOPTIC_ON / INSTANCE_ON / ENTITY_ON"
        )
    return DatasetEvaluators(evaluators, output_dir=out_dir)
