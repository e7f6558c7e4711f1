"""Panoptic quality on hand-computed cases (matching, crowd, void, empty), int ids, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from freeseg.evaluation import PanopticEvaluator
from freeseg.evaluation.pq import id2rgb, rgb2id
from freeseg.utils.errors import FreeSegError

NAMES = ["dog", "cat", "sky"]  # dog, cat = things; cat unseen


def gt_sample(tmp_path, ids: np.ndarray, segments: list[dict], name: str = "img") -> dict:
    path = tmp_path / f"{name}.png"
    Image.fromarray(id2rgb(ids)).save(path)
    return {"file_name": f"{name}.jpg", "image_id": name, "pan_seg_file_name": str(path),
            "segments_info": segments}


def base_gt() -> tuple[np.ndarray, list[dict]]:
    ids = np.zeros((4, 4), dtype=np.int64)
    ids[:2] = 1000  # sky
    ids[2:, :2] = 2000  # dog
    ids[2:, 2:] = 70000  # cat (an id that needs all three PNG channels)
    segs = [{"id": 1000, "category_id": 2, "iscrowd": 0},
            {"id": 2000, "category_id": 0, "iscrowd": 0},
            {"id": 70000, "category_id": 1, "iscrowd": 0}]
    return ids, segs


def evaluator(**kw) -> PanopticEvaluator:
    return PanopticEvaluator(class_names=NAMES, thing_ids=[0, 1], trainable_flag=[1, 0, 1], **kw)


def run(tmp_path, pred_ids: np.ndarray, pred_segs: list[dict], gt=None) -> dict:
    ev = evaluator()
    ids, segs = gt or base_gt()
    ev.process([gt_sample(tmp_path, ids, segs)],
               [{"panoptic_seg": (torch.from_numpy(pred_ids.astype(np.int32)), pred_segs)}])
    return ev.evaluate()["panoptic_seg"]


def test_rgb_id_round_trip_keeps_large_ids():
    ids = np.array([[0, 255, 256, 70000, 16777215]])
    assert (rgb2id(id2rgb(ids)) == ids).all()


def test_hand_computed_match_and_half_overlap(tmp_path):
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[:2] = 256  # sky, exact (256 and 512 would both be 0 after a uint8 cast)
    pred[2:, :2] = 512  # dog, exact
    pred[2, 2:] = 3  # cat: IoU 2/4 = 0.5 is not > 0.5 -> one FN and one FP
    segs = [{"id": 256, "category_id": 2}, {"id": 512, "category_id": 0},
            {"id": 3, "category_id": 1}]
    r = run(tmp_path, pred, segs)
    assert r["PQ"] == pytest.approx(200 / 3) and r["RQ"] == pytest.approx(200 / 3)
    assert r["PQ_th"] == pytest.approx(50.0) and r["PQ_st"] == pytest.approx(100.0)
    assert r["PQ-seen"] == pytest.approx(100.0) and r["PQ-unseen"] == pytest.approx(0.0)
    assert r["PQ-cat"] == 0.0 and r["PQ-dog"] == pytest.approx(100.0)


def test_void_in_gt_is_left_out_of_the_union(tmp_path):
    ids, segs = base_gt()
    ids[3, 3] = 0  # void pixel under the cat prediction
    pred = ids.copy()
    pred[3, 3] = 70000
    r = run(tmp_path, pred, [{"id": 1000, "category_id": 2}, {"id": 2000, "category_id": 0},
                             {"id": 70000, "category_id": 1}], gt=(ids, segs))
    # GT cat area is taken from its mask (3 px); the void pixel does not count in the union
    assert r["PQ"] == pytest.approx(100.0)


def test_crowd_region_absorbs_a_prediction(tmp_path):
    ids, segs = base_gt()
    segs[2]["iscrowd"] = 1
    pred = ids.copy()
    pred[2:, 2:] = 5
    r = run(tmp_path, pred, [{"id": 1000, "category_id": 2}, {"id": 2000, "category_id": 0},
                             {"id": 5, "category_id": 1}], gt=(ids, segs))
    # crowd cat: no FN; the cat prediction lies on the crowd region: no FP; cat not counted
    assert r["PQ"] == pytest.approx(100.0) and math.isnan(r["PQ-unseen"])


def test_empty_prediction_counts_every_segment_missed(tmp_path):
    r = run(tmp_path, np.zeros((4, 4), dtype=np.int64), [])
    assert r["PQ"] == 0.0 and r["SQ"] == 0.0 and r["PQ-seen"] == 0.0


def test_gt_json_and_dataset_ids(tmp_path):
    import json

    ids, segs = base_gt()
    Image.fromarray(id2rgb(ids)).save(tmp_path / "7.png")
    to_ds = {0: 18, 1: 17, 2: 187}
    (tmp_path / "gt.json").write_text(json.dumps({"annotations": [{
        "image_id": 7, "file_name": "7.png",
        "segments_info": [{**s, "category_id": to_ds[s["category_id"]], "area": 4 if s["id"] != 1000
                           else 8} for s in segs]}]}))
    ev = evaluator(panoptic_json=str(tmp_path / "gt.json"), panoptic_root=str(tmp_path),
                   dataset_id_to_contiguous_id={v: k for k, v in to_ds.items()})
    ev.process([{"file_name": "images/7.jpg", "image_id": 7}],
               [{"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)),
                                  [{"id": s["id"], "category_id": s["category_id"]} for s in segs])}])
    assert ev.evaluate()["panoptic_seg"]["PQ"] == pytest.approx(100.0)


@pytest.mark.parametrize("case", ["unknown_class", "size", "missing_gt", "not_listed", "empty_listed"])
def test_bad_input_names_the_image(tmp_path, case):
    ids, segs = base_gt()
    inp = gt_sample(tmp_path, ids, segs, "bad_image")
    pred, psegs = ids.copy(), [{"id": s["id"], "category_id": s["category_id"]} for s in segs]
    if case == "unknown_class":
        psegs[0]["category_id"] = 9
    elif case == "size":
        pred = np.zeros((5, 4), dtype=np.int64)
    elif case == "missing_gt":
        inp["pan_seg_file_name"] = str(tmp_path / "nope.png")
    elif case == "not_listed":
        psegs = psegs[:2]
    else:
        psegs.append({"id": 99, "category_id": 0})
    with pytest.raises(FreeSegError, match="bad_image"):
        evaluator().process([inp], [{"panoptic_seg": (torch.from_numpy(pred), psegs)}])
