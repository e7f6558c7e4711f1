"""Evaluator protocol, inference loop, results.json / CSV reports and build_evaluator."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from freeseg.config import get_cfg
from freeseg.data.catalog import MetadataCatalog
from freeseg.evaluation import (DatasetEvaluator, DatasetEvaluators, InstanceSegEvaluator,
                                PanopticEvaluator, SemSegEvaluator, UnseenRecallEvaluator,
                                build_evaluator, inference_on_dataset)
from freeseg.evaluation.report import format_table
from freeseg.utils.errors import ConfigError, FreeSegError


class Recorder(DatasetEvaluator):
    def __init__(self, family: str = "rec"):
        self.family, self.seen, self.resets = family, [], 0

    def reset(self):
        self.resets += 1
        self.seen = []

    def process(self, inputs, outputs):
        self.seen += [(i["x"], o["y"]) for i, o in zip(inputs, outputs)]

    def evaluate(self):
        return {self.family: {"n": len(self.seen)}}


class Doubler(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.modes, self.grad = [], []

    def forward(self, batch):
        self.modes.append(self.training)
        self.grad.append(torch.is_grad_enabled())
        return [{"y": 2 * b["x"]} for b in batch]


def test_inference_on_dataset_eval_mode_no_grad_and_restore(tmp_path):
    model, rec = Doubler(), Recorder()
    model.train()
    loader = [[{"x": i}, {"x": i + 10}] for i in range(3)]
    res = inference_on_dataset(model, loader, DatasetEvaluators([rec, Recorder("other")],
                                                                output_dir=str(tmp_path)))
    assert res == {"rec": {"n": 6}, "other": {"n": 6}}
    assert rec.seen[0] == (0, 0) and rec.seen[-1] == (12, 24) and rec.resets == 1
    assert model.modes == [False] * 3 and model.grad == [False] * 3 and model.training
    assert json.loads((tmp_path / "results.json").read_text()) == res


def test_empty_batches_from_skipped_images_are_skipped():
    model, rec = Doubler(), Recorder()
    res = inference_on_dataset(model, [[{"x": 1}], [], [{"x": 2}]], rec)
    assert res == {"rec": {"n": 2}} and len(model.modes) == 2


def test_timing_leaves_out_the_warm_up_batches(caplog):
    # 8 batches of 2 images: the first 5 warm up (caches, lazy builds), the last 3 are timed;
    # with 3 batches, all but the last warm up
    with caplog.at_level("INFO", logger="freeseg.evaluation.evaluator"):
        inference_on_dataset(Doubler(), [[{"x": i}, {"x": i}] for i in range(8)], Recorder())
        inference_on_dataset(Doubler(), [[{"x": i}, {"x": i}] for i in range(3)], Recorder())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("inference done")]
    assert [line.split(":")[0] for line in lines] == ["inference done on 6 images (after 5 warm-up batches)",
                                                     "inference done on 2 images (after 2 warm-up batches)"]


def test_evaluator_list_and_none():
    assert inference_on_dataset(Doubler(), [[{"x": 1}]], [Recorder()]) == {"rec": {"n": 1}}
    assert inference_on_dataset(Doubler(), [[{"x": 1}]], None) == {}


def test_duplicate_family_is_an_error():
    with pytest.raises(FreeSegError, match="rec"):
        DatasetEvaluators([Recorder(), Recorder()]).evaluate()


def test_results_json_is_strict_json(tmp_path):
    DatasetEvaluators([_Nan()], output_dir=str(tmp_path)).evaluate()
    assert json.loads((tmp_path / "results.json").read_text()) == {"sem_seg": {"mIoU": None}}


class _Nan(DatasetEvaluator):
    def evaluate(self):
        return {"sem_seg": {"mIoU": float("nan")}}


def test_format_table():
    t = format_table(["PQ", "n"], [[12.3456, 3]])
    assert t.splitlines()[2] == "| 12.346 | 3 |" and t.splitlines()[1].endswith(":|")


@pytest.fixture
def datasets():
    names = ["_eval_test_sem", "_eval_test_pan", "_eval_test_bad"]
    MetadataCatalog.get(names[0]).set(evaluator_type="sem_seg", stuff_classes=["a", "b", "c"],
                                      ignore_label=255, trainable_flag=[1, 0, 1])
    MetadataCatalog.get(names[1]).set(
        evaluator_type="coco_panoptic_seg", stuff_classes=["dog", "cat", "sky"],
        thing_dataset_id_to_contiguous_id={18: 0, 17: 1},
        stuff_dataset_id_to_contiguous_id={18: 0, 17: 1, 187: 2}, trainable_flag=[1, 0, 1],
        json_file="/nonexistent/instances.json", ignore_label=255)
    MetadataCatalog.get(names[2]).set(evaluator_type="sem_sge")
    yield names
    for n in names:
        MetadataCatalog.remove(n)


def test_build_evaluator_dispatch(datasets, tmp_path):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    ev = build_evaluator(cfg, datasets[0])
    assert [type(e) for e in ev.evaluators] == [SemSegEvaluator]
    gt = np.array([[0, 1]], dtype=np.uint8)
    Image.fromarray(gt).save(tmp_path / "g.png")
    ev.process([{"file_name": "g.jpg", "sem_seg_file_name": str(tmp_path / "g.png")}],
               [{"sem_seg": torch.eye(3)[:, :2].reshape(3, 1, 2)}])
    res = ev.evaluate()
    assert res["sem_seg"]["mIoU-base"] == 100.0 and res["sem_seg"]["mIoU-unbase"] == 100.0
    assert (tmp_path / "inference" / "results.json").exists()
    assert (tmp_path / "inference" / "sem_seg_per_class.csv").exists()

    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = True
    types = [type(e) for e in build_evaluator(cfg, datasets[1], str(tmp_path)).evaluators]
    assert types == [PanopticEvaluator, InstanceSegEvaluator, UnseenRecallEvaluator]


def test_build_evaluator_errors(datasets):
    cfg = get_cfg()
    with pytest.raises(ConfigError, match="sem_seg"):
        build_evaluator(cfg, datasets[2])
    with pytest.raises(ConfigError, match="PANOPTIC_ON"):
        build_evaluator(cfg, datasets[1])
