"""Semantic evaluator on hand-computed cases, edge cases and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from freeseg.evaluation import SemSegEvaluator
from freeseg.evaluation.sem_seg import confusion_matrix
from freeseg.utils.errors import FreeSegError

NAMES = ["a", "b", "c"]
GT = np.array([[0, 0, 1, 1], [0, 255, 1, 1]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [2, 0, 1, 0]])


def scores(pred: np.ndarray, k: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(pred).long(), k).permute(2, 0, 1).float()


def sample(tmp_path, gt: np.ndarray, name: str = "img") -> dict:
    path = tmp_path / f"{name}.png"
    Image.fromarray(gt).save(path)
    return {"file_name": f"{name}.jpg", "sem_seg_file_name": str(path)}


def run(tmp_path, pairs, **kw) -> dict:
    ev = SemSegEvaluator(class_names=NAMES, **kw)
    for i, (gt, pred) in enumerate(pairs):
        ev.process([sample(tmp_path, gt, f"im{i}")], [{"sem_seg": scores(pred)}])
    return ev.evaluate()["sem_seg"]


def test_confusion_matrix_rows_are_predictions_and_ignore_goes_last():
    conf = confusion_matrix(PRED, GT.astype(np.int64), 3, 255)
    assert conf.shape == (4, 4)
    assert conf[0, 3] == 1  # predicted a on the ignored pixel
    assert conf[1, 0] == 1 and conf[2, 0] == 1 and conf[1, 1] == 3 and conf[0, 1] == 1
    assert conf.sum() == GT.size


def test_hand_computed_freeseg_and_detectron2(tmp_path):
    r = run(tmp_path, [(GT, PRED)], evaluation_set={"base": [0]})
    # IoU(a) = 1 / (3 + 2 - 1), IoU(b) = 3 / (4 + 4 - 3); c is predicted but absent from the GT
    assert r["IoU-a"] == pytest.approx(25.0) and r["IoU-b"] == pytest.approx(60.0)
    assert math.isnan(r["IoU-c"]) and math.isnan(r["ACC-c"])
    assert r["mIoU"] == pytest.approx(100 * 0.85 / 3)  # FreeSeg: c counts as 0
    assert r["mIoU-d2"] == pytest.approx(42.5)  # detectron2: c left out
    assert r["fwIoU"] == pytest.approx(100 * (0.25 * 3 + 0.6 * 4) / 7)
    assert r["pACC"] == pytest.approx(400 / 7)
    assert r["mACC"] == pytest.approx(100 * (1 / 3 + 0.75) / 2)
    assert r["mIoU-base"] == pytest.approx(25.0)
    assert r["mIoU-unbase"] == pytest.approx(30.0)  # (0.6 + 0) / 2
    assert r["hIoU-base"] == pytest.approx(100 * 2 / (1 / 0.25 + 1 / 0.3))
    assert r["pAcc-base"] == pytest.approx(100 / 3) and r["pAcc-unbase"] == pytest.approx(75.0)
    assert "BoundaryIoU-a" in r and "min(IoU, B-Iou)-a" in r


def test_trainable_flag_gives_the_base_set(tmp_path):
    by_set = run(tmp_path, [(GT, PRED)], evaluation_set={"base": [0]})
    by_flag = run(tmp_path, [(GT, PRED)], trainable_flag=[1, 0, 0])
    assert by_flag["mIoU-base"] == by_set["mIoU-base"]
    assert by_flag["hIoU-base"] == by_set["hIoU-base"]
    assert "mIoU-base" not in run(tmp_path, [(GT, PRED)])


def test_harmonic_is_zero_when_unseen_classes_all_miss(tmp_path):
    gt = np.array([[0, 1]], dtype=np.uint8)
    r = run(tmp_path, [(gt, np.array([[0, 0]]))], trainable_flag=[1, 0, 0])
    assert r["mIoU-unbase"] == 0.0 and r["hIoU-base"] == 0.0


def test_all_ignore_image_changes_nothing(tmp_path):
    base = run(tmp_path, [(GT, PRED)])
    ignore = np.full((3, 5), 255, dtype=np.uint8)
    more = run(tmp_path, [(GT, PRED), (ignore, np.zeros((3, 5), dtype=np.int64))])
    # (detectron2's boundary IoU is left out: it erodes the label map, ignore slot included)
    for k, v in base.items():
        if "B-Iou" in k or "Boundary" in k:
            continue
        assert (math.isnan(v) and math.isnan(more[k])) or v == more[k], k


def test_only_ignore_gives_nan_not_a_crash(tmp_path):
    r = run(tmp_path, [(np.full((2, 2), 255, dtype=np.uint8), np.zeros((2, 2), dtype=np.int64))])
    assert math.isnan(r["mIoU"]) and math.isnan(r["pACC"])


def test_per_class_csv(tmp_path):
    run(tmp_path, [(GT, PRED)], output_dir=str(tmp_path / "out"))
    lines = (tmp_path / "out" / "sem_seg_per_class.csv").read_text().splitlines()
    assert lines[0].startswith("class_id,class,IoU") and lines[2].startswith("1,b,60.0")
    assert lines[3].split(",")[2] == ""  # NaN IoU of c written empty


def test_gt_from_sem_seg_tensor_when_no_file(tmp_path):
    ev = SemSegEvaluator(class_names=NAMES)
    ev.process([{"file_name": "x", "sem_seg": torch.from_numpy(GT.astype(np.int64))}],
               [{"sem_seg": scores(PRED)}])
    assert ev.evaluate()["sem_seg"]["IoU-b"] == pytest.approx(60.0)


@pytest.mark.parametrize("case", ["size", "unknown_gt", "missing_file", "channels", "no_gt"])
def test_bad_input_names_the_image(tmp_path, case):
    ev = SemSegEvaluator(class_names=NAMES)
    inp, pred = sample(tmp_path, GT, "bad_image"), scores(PRED)
    if case == "size":
        pred = scores(np.zeros((3, 4), dtype=np.int64))
    elif case == "unknown_gt":
        inp = sample(tmp_path, np.array([[0, 7, 1, 1], [0, 0, 1, 1]], dtype=np.uint8), "bad_image")
    elif case == "missing_file":
        inp["sem_seg_file_name"] = str(tmp_path / "nope.png")
    elif case == "channels":
        pred = scores(PRED, k=4)
    else:
        del inp["sem_seg_file_name"]
    with pytest.raises(FreeSegError, match="bad_image"):
        ev.process([inp], [{"sem_seg": pred}])
