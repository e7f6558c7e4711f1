"""Evaluators gather on rank 0 (two gloo processes on CPU): same metrics as one process."""
from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from freeseg.evaluation import ClassificationEvaluator, DatasetEvaluators, SemSegEvaluator

GTS = [np.array([[0, 0, 1, 1]], dtype=np.uint8), np.array([[2, 2, 255, 1]], dtype=np.uint8)]
PREDS = [np.array([[0, 1, 1, 1]]), np.array([[2, 0, 0, 1]])]


def _evaluators() -> DatasetEvaluators:
    return DatasetEvaluators([
        SemSegEvaluator(class_names=["a", "b", "c"], trainable_flag=[1, 0, 1]),
        ClassificationEvaluator(class_names=["a", "b", "c"], topk=(1, 2)),
    ])


def _feed(ev: DatasetEvaluators, folder: str, idx: list[int]) -> None:
    for i in idx:
        scores = torch.nn.functional.one_hot(torch.from_numpy(PREDS[i]), 3).permute(2, 0, 1).float()
        ev.process([{"file_name": f"{i}.jpg", "sem_seg_file_name": f"{folder}/{i}.png",
                     "category_id": i}], [{"sem_seg": scores, "logits": torch.tensor([1.0, 0, 0])}])


def _worker(rank: int, init_file: str, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        ev = _evaluators()
        ev.reset()
        _feed(ev, folder, [rank])
        with open(f"{folder}/result.{rank}.json", "w") as f:
            json.dump(ev.evaluate(), f)
        group = weakref.ref(dist.group.WORLD)
    finally:
        dist.destroy_process_group()
    # the gathers keep no reference to the group: one that outlives destroy_process_group is
    # torn down during interpreter exit, where gloo's threads can abort the process
    gc.collect()
    with open(f"{folder}/group_freed.{rank}.json", "w") as f:
        json.dump(group() is None, f)


def test_two_ranks_equal_one_process(tmp_path):
    for i, gt in enumerate(GTS):
        Image.fromarray(gt).save(tmp_path / f"{i}.png")
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    single = _evaluators()
    _feed(single, str(tmp_path), [0, 1])
    expected = json.loads(json.dumps(single.evaluate()))
    assert json.loads((tmp_path / "result.0.json").read_text()) == expected
    assert json.loads((tmp_path / "result.1.json").read_text()) == {}
    for rank in (0, 1):
        assert json.loads((tmp_path / f"group_freed.{rank}.json").read_text()) is True
    assert expected["classification"]["Top1"] == 50.0
