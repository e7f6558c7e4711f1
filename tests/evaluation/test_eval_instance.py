"""Instance AP (pycocotools), seen/unseen AP, open-world unseen recall and entity AP."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from freeseg.evaluation import EntityEvaluator, InstanceSegEvaluator, UnseenRecallEvaluator
from freeseg.evaluation.pq import id2rgb
from freeseg.utils.errors import FreeSegError

NAMES = ["dog", "cat", "sky"]  # dog seen thing, cat unseen thing, sky seen stuff
FLAGS = [1, 0, 1]


def box(y0: int, y1: int, x0: int, x1: int, size: int = 20) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


DOG, CAT = box(0, 8, 0, 8), box(10, 18, 10, 18)


def image(name: str = "img") -> dict:
    # dog as a polygon (as data set dicts carry it), cat as a mask
    return {"file_name": f"{name}.jpg", "image_id": name, "height": 20, "width": 20,
            "annotations": [
                {"category_id": 0, "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]], "iscrowd": 0},
                {"category_id": 1, "segmentation": CAT, "iscrowd": 0}]}


def instances(masks, scores, classes) -> dict:
    return {"pred_masks": torch.from_numpy(np.stack(masks)) if masks else
            torch.zeros(0, 20, 20, dtype=torch.bool),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "pred_classes": torch.tensor(classes, dtype=torch.long)}


def segm(masks, scores, classes, **kw) -> dict:
    ev = InstanceSegEvaluator(class_names=NAMES, thing_ids=[0, 1], trainable_flag=FLAGS, **kw)
    ev.process([image()], [{"instances": instances(masks, scores, classes)}])
    return ev.evaluate()["segm"]


def test_perfect_predictions_give_ap_100():
    r = segm([DOG, CAT], [0.9, 0.8], [0, 1])
    assert r["AP"] == pytest.approx(100.0) and r["AP50"] == pytest.approx(100.0)
    assert r["AP-seen"] == pytest.approx(100.0) and r["AP-unseen"] == pytest.approx(100.0)


def test_seen_unseen_split_and_stuff_detections_dropped(tmp_path):
    # cat predicted as dog: dog AP 100 (its GT found first), cat AP 0; a "sky" detection is dropped
    r = segm([DOG, CAT, box(0, 20, 0, 20)], [0.9, 0.8, 0.99], [0, 0, 2],
             output_dir=str(tmp_path))
    assert r["AP-dog"] == pytest.approx(100.0) and r["AP-cat"] == 0.0
    assert r["AP-seen"] == pytest.approx(100.0) and r["AP-unseen"] == 0.0
    assert r["AP"] == pytest.approx(50.0)
    assert (tmp_path / "segm_per_class.csv").exists()
    assert (tmp_path / "coco_instances_results.json").exists()


def test_empty_prediction_gives_nan():
    r = segm([], [], [])
    assert math.isnan(r["AP"]) and math.isnan(r["AP-unseen"])


@pytest.mark.parametrize("case", ["unknown_class", "size", "no_gt"])
def test_bad_input_names_the_image(case):
    ev = InstanceSegEvaluator(class_names=NAMES, thing_ids=[0, 1])
    inp, inst = image("bad_image"), instances([DOG], [0.5], [0])
    if case == "unknown_class":
        inst["pred_classes"] = torch.tensor([7])
    elif case == "size":
        inst["pred_masks"] = torch.zeros(1, 10, 20, dtype=torch.bool)
    else:
        del inp["annotations"]
    with pytest.raises(FreeSegError, match="bad_image"):
        ev.process([inp], [{"instances": inst}])


def recall(masks, scores) -> dict:
    ev = UnseenRecallEvaluator(class_names=NAMES, trainable_flag=FLAGS)
    ev.process([image()], [{"instances": instances(masks, scores, [0] * len(masks))}])
    return ev.evaluate()["open_world"]


def test_unseen_recall_ignores_seen_objects_and_classes():
    # class-agnostic: the cat found with a "dog" label still counts
    assert recall([DOG, CAT], [0.9, 0.5])["AR@100"] == pytest.approx(100.0)
    only_dog = recall([DOG], [0.9])
    assert only_dog["AR@100"] == 0.0 and only_dog["num_unseen_gt"] == 1


def test_unseen_recall_budget_at_10_and_100():
    # ten higher-scored proposals on the seen dog fill the top-10 budget before the cat
    r = recall([DOG] * 10 + [CAT], [0.9] * 10 + [0.1])
    assert r["AR@10"] == 0.0 and r["AR@100"] == pytest.approx(100.0)


def test_unseen_recall_needs_flags():
    with pytest.raises(FreeSegError, match="trainable_flag"):
        UnseenRecallEvaluator(class_names=NAMES, trainable_flag=None)


def entity(tmp_path, pred: np.ndarray, segments: list[dict]) -> dict:
    ids = np.zeros((20, 20), dtype=np.int64)
    ids[:10] = 1
    ids[10:, :10] = 2
    ids[10:, 10:] = 3
    Image.fromarray(id2rgb(ids)).save(tmp_path / "gt.png")
    inp = {"file_name": "e.jpg", "pan_seg_file_name": str(tmp_path / "gt.png"),
           "segments_info": [{"id": 1, "category_id": 2, "iscrowd": 0},
                             {"id": 2, "category_id": 0, "iscrowd": 0},
                             {"id": 3, "category_id": 1, "iscrowd": 0}]}
    ev = EntityEvaluator(num_classes=3)
    ev.process([inp], [{"entity": (torch.from_numpy(pred.astype(np.int32)), segments)}])
    return ev.evaluate()["entity"]


def test_entity_ap(tmp_path):
    pred = np.zeros((20, 20), dtype=np.int64)
    pred[:10] = 5
    pred[10:, :10] = 6
    pred[10:, 10:] = 7
    segs = [{"id": 5, "score": 0.9}, {"id": 6, "score": 0.8}, {"id": 7, "score": 0.7}]
    assert entity(tmp_path, pred, segs)["AP"] == pytest.approx(100.0)
    merged = pred.copy()
    merged[10:] = 6  # two GT entities merged into one prediction: one entity missed
    r = entity(tmp_path, merged, segs[:2])
    # the merged prediction has IoU 0.5 with each of its two GT entities: matched at IoU 0.5 only
    assert r["AR100"] == pytest.approx(100 * (2 / 3 + 9 * (1 / 3)) / 10)
    assert 0 < r["AP"] < 100
    assert math.isnan(entity(tmp_path, np.zeros((20, 20), dtype=np.int64), [])["AP"])
    with pytest.raises(FreeSegError, match="e.jpg"):
        entity(tmp_path, np.zeros((10, 20), dtype=np.int64), [])
