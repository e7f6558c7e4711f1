"""Stage-1 top-1/top-5 accuracy: per sample, per class, mean over classes, seen/unseen."""
from __future__ import annotations

import math

import pytest
import torch

from freeseg.evaluation import ClassificationEvaluator
from freeseg.utils.errors import FreeSegError

NAMES = [f"c{i}" for i in range(7)]


def logits_ranking(gt: int, rank: int) -> torch.Tensor:
    """Logits [7] where class ``gt`` is the ``rank``-th best (0 = best)."""
    order = [c for c in range(7) if c != gt]
    order.insert(rank, gt)
    out = torch.zeros(7)
    for r, c in enumerate(order):
        out[c] = 10.0 - r
    return out


def test_hand_computed_accuracies(tmp_path):
    ev = ClassificationEvaluator(class_names=NAMES, trainable_flag=[1, 1, 0, 1, 1, 1, 1],
                                 output_dir=str(tmp_path))
    samples = [(0, 0), (0, 0), (0, 6), (1, 3), (2, 0), (2, 5)]  # (class, rank of the GT)
    ev.process([{"category_id": c, "file_name": f"s{i}"} for i, (c, _) in enumerate(samples)],
               [{"logits": logits_ranking(c, r)} for c, r in samples])
    r = ev.evaluate()["classification"]
    assert r["Top1"] == pytest.approx(100 * 3 / 6) and r["Top5"] == pytest.approx(100 * 4 / 6)
    # per class: c0 2/3, c1 0, c2 1/2 (top-1); c0 2/3, c1 1, c2 1/2 (top-5)
    assert r["mTop1"] == pytest.approx(100 * (2 / 3 + 0 + 0.5) / 3)
    assert r["mTop5"] == pytest.approx(100 * (2 / 3 + 1 + 0.5) / 3)
    assert r["Top1-c0"] == pytest.approx(200 / 3) and math.isnan(r["Top1-c4"])
    assert r["Top1-base"] == pytest.approx(100 * 2 / 4) and r["Top1-unbase"] == pytest.approx(50.0)
    assert r["mTop5-base"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert (tmp_path / "classification_per_class.csv").read_text().count("\n") == 8


def test_gt_from_instances_and_bad_input():
    ev = ClassificationEvaluator(class_names=NAMES)
    ev.process([{"instances": {"gt_classes": torch.tensor([3])}}], [{"logits": logits_ranking(3, 0)}])
    assert ev.evaluate()["classification"]["Top1"] == 100.0
    with pytest.raises(FreeSegError, match="bad_sample"):
        ev.process([{"category_id": 9, "file_name": "bad_sample"}], [{"logits": torch.zeros(7)}])
    with pytest.raises(FreeSegError, match="bad_sample"):
        ev.process([{"category_id": 1, "file_name": "bad_sample"}], [{"logits": torch.zeros(5)}])
