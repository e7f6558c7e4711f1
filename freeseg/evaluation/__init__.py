"""Evaluators (detectron2's ``reset / process / evaluate`` protocol) and the inference loop.

See docs/evaluation.md for every metric's definition and how it relates to the reference tools.
"""
from .build import EVALUATOR_TYPES, build_evaluator
from .classification import ClassificationEvaluator
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from .instance import InstanceSegEvaluator
from .open_world import EntityEvaluator, UnseenRecallEvaluator
from .panoptic import PanopticEvaluator
from .pq import pq_compute
from .sem_seg import SemSegEvaluator

__all__ = [
    "DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "build_evaluator",
    "EVALUATOR_TYPES", "SemSegEvaluator", "PanopticEvaluator", "InstanceSegEvaluator",
    "ClassificationEvaluator", "UnseenRecallEvaluator", "EntityEvaluator", "pq_compute",
]
