"""Your own panoptic data sets (COCO panoptic format) from a YAML file (freeseg/data/custom.py)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from freeseg.data.catalog import DatasetCatalog, MetadataCatalog
from freeseg.data.custom import register_custom
from freeseg.data.mappers.common import read_label_map
from freeseg.data.mappers.full_task import FullTaskMapper
from freeseg.utils.colors import id_to_rgb
from freeseg.utils.errors import FreeSegError
from tests.data.test_custom import registered_file

# Data set ids on purpose not 0..3 nor in class order: the contiguous ids follow this list.
CATEGORIES = [{"id": 7, "name": "person", "isthing": 1}, {"id": 3, "name": "car", "isthing": 1},
              {"id": 20, "name": "road"}, {"id": 11, "name": "sky"}]
COLOURS = {7: (200, 60, 60), 3: (40, 40, 200), 20: (90, 90, 90), 11: (120, 170, 250)}


def _image_segments(i: int) -> tuple[np.ndarray, list[dict]]:
    """A 64x64 panoptic id map: sky on top, road below, two people and (except in image 0) a car;
    a void border."""
    ids = np.zeros((64, 64), np.int64)
    segs = []
    for sid, cat, (y0, y1, x0, x1) in ((1, 11, (2, 30, 2, 62)), (2, 20, (30, 62, 2, 62)), (3, 7, (20, 50, 6, 18)),
                                       (4, 7, (22, 52, 22, 32)), (5, 3, (36, 56, 40, 60))):
        if sid == 5 and i == 0:
            continue
        ids[y0:y1, x0:x1] = sid
        segs.append({"id": sid, "category_id": cat, "iscrowd": 0})
    return ids, segs


def write_panoptic_data(root: Path, prefix: str, n: int = 3, categories_file: bool = False) -> Path:
    """``n`` images per split in COCO panoptic format and the YAML file describing them (car unseen,
    the training set seen-only); with ``categories_file`` the categories come from the val JSON."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "panoptic" / split).mkdir(parents=True)
        annotations = []
        for i in range(n):
            ids, segs = _image_segments(i)
            cat_of = {0: None, **{s["id"]: s["category_id"] for s in segs}}
            image = np.array([[COLOURS[cat_of[v]] if cat_of[v] else (0, 0, 0) for v in row] for row in ids], np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"im{i}.png")
            Image.fromarray(id_to_rgb(ids)).save(root / "panoptic" / split / f"im{i}.png")
            annotations.append({"image_id": i, "file_name": f"im{i}.png", "segments_info": segs})
        (root / f"panoptic_{split}.json").write_text(json.dumps({
            "images": [{"id": i, "file_name": f"im{i}.png", "height": 64, "width": 64} for i in range(n)],
            "annotations": annotations, "categories": CATEGORIES}))
    classes = "categories_file: panoptic_val.json" if categories_file else f"categories: {json.dumps(CATEGORIES)}"
    spec = root / "mypanoptic.yaml"
    spec.write_text(
        f"{classes}\nunseen: [car]\ndatasets:\n"
        f"  {prefix}_train: {{images: images/train, panoptic: panoptic/train, panoptic_json: panoptic_train.json, classes: seen}}\n"
        f"  {prefix}_val: {{images: images/val, panoptic: panoptic/val, panoptic_json: panoptic_val.json}}\n"
    )
    return spec


@pytest.fixture(params=[False, True], ids=["categories", "categories_file"])
def registered(tmp_path, request):
    prefix = f"custom_pan_{request.node.name.split('[')[0][-16:]}_{request.param}"
    spec = write_panoptic_data(tmp_path, prefix, categories_file=request.param)
    with registered_file(spec) as names:
        yield prefix, tmp_path, names


def test_registers_panoptic_sets_with_things_stuff_and_the_split(registered):
    prefix, _, names = registered
    assert sorted(names) == sorted(f"{prefix}_{s}{c}" for s in ("train", "val") for c in ("", "_classification"))
    train, val = MetadataCatalog.get(f"{prefix}_train"), MetadataCatalog.get(f"{prefix}_val")
    assert train.stuff_classes == ["person", "road", "sky"] and train.thing_classes == ["person"]
    assert train.stuff_dataset_id_to_contiguous_id == {7: 0, 20: 1, 11: 2} and train.get("trainable_flag") is None
    assert val.stuff_classes == ["person", "car", "road", "sky"] and val.thing_dataset_id_to_contiguous_id == {7: 0, 3: 1}
    assert val.trainable_flag == [1, 0, 1, 1]
    assert val.evaluation_set == {"base": [0, 2, 3], "novel_thing": [1], "novel_stuff": []}
    assert val.evaluator_type == "coco_panoptic_seg" and val.label_divisor == 1000
    assert MetadataCatalog.get(f"{prefix}_train_classification").evaluator_type == "classification"


def test_semantic_maps_are_derived_once_from_the_segments(registered):
    prefix, root, _ = registered
    val = DatasetCatalog.get(f"{prefix}_val")
    assert [Path(r["file_name"]).name for r in val] == ["im0.png", "im1.png", "im2.png"]
    sem_path = Path(val[1]["sem_seg_file_name"])
    assert sem_path.parent == root / "panoptic" / "val_semseg"
    sem = read_label_map(str(sem_path))
    ids, segs = _image_segments(1)
    contiguous = {c["id"]: i for i, c in enumerate(CATEGORIES)}
    expected = np.full(ids.shape, 255)
    for s in segs:
        expected[ids == s["id"]] = contiguous[s["category_id"]]
    np.testing.assert_array_equal(sem, expected)
    assert sorted((s["id"], s["category_id"], s["isthing"]) for s in val[1]["segments_info"]) == [
        (1, 3, False), (2, 2, False), (3, 0, True), (4, 0, True), (5, 1, True)]
    stamp = sem_path.stat().st_mtime_ns
    DatasetCatalog.get(f"{prefix}_val")
    assert sem_path.stat().st_mtime_ns == stamp  # not written again


def test_semantic_maps_are_made_again_when_the_categories_change(tmp_path):
    spec = write_panoptic_data(tmp_path, "custom_pan_order")
    with registered_file(spec):
        before = read_label_map(DatasetCatalog.get("custom_pan_order_val")[1]["sem_seg_file_name"])
        assert {s["category_id"] for s in DatasetCatalog.get("custom_pan_order_val_classification")} == {0, 1, 2, 3}
    reordered = [CATEGORIES[3], CATEGORIES[2], CATEGORIES[0], CATEGORIES[1]]  # sky, road, person, car
    spec.write_text(spec.read_text().replace(json.dumps(CATEGORIES), json.dumps(reordered)))
    with registered_file(spec):
        after = read_label_map(DatasetCatalog.get("custom_pan_order_val")[1]["sem_seg_file_name"])
        samples = DatasetCatalog.get("custom_pan_order_val_classification")
    assert (before[10, 10], before[60, 10], before[30, 10]) == (3, 2, 0)
    assert (after[10, 10], after[60, 10], after[30, 10]) == (0, 1, 2)
    # im0 has no car: its classes were person 0, road 2, sky 3 and are now sky 0, road 1, person 2
    im0 = [s for s in samples if s["task"] == "sem_seg" and Path(s["file_name"]).name == "im0.png"]
    assert sorted(s["category_id"] for s in im0) == [0, 1, 2]  # label counts made again too


def test_seen_only_training_set_drops_unseen_segments_and_pixels(registered):
    prefix, _, _ = registered
    train = DatasetCatalog.get(f"{prefix}_train")
    assert all(s["category_id"] != 3 for r in train for s in r["segments_info"])  # car's data set id
    assert sorted(s["category_id"] for s in train[1]["segments_info"]) == [0, 0, 1, 2]
    mapper = FullTaskMapper(augmentations=[], num_classes=3)
    out = mapper(train[1])
    sem = out["sem_seg"].numpy()
    assert sem[45, 50] == 255 and sem[10, 10] == 2 and sem[60, 10] == 1 and sem[30, 10] == 0
    assert sorted(out["pan_instances"]["gt_classes"].tolist()) == [0, 0, 1, 2]
    assert out["ins_instances"]["gt_classes"].tolist() == [0, 0]
    assert not out["pan_instances"]["gt_masks"][:, 45, 50].any()  # the car's pixels: no target


def test_classification_samples_for_every_task(registered):
    prefix, _, _ = registered
    samples = DatasetCatalog.get(f"{prefix}_train_classification")
    count = {}
    for s in samples:
        count[s["task"]] = count.get(s["task"], 0) + 1
        assert s["category_id"] in (0, 1, 2)
    # 3 images: semantic person/road/sky each; 2 people each; 4 seen segments each
    assert count == {"sem_seg": 9, "ins_seg": 6, "pan_seg": 12}
    val = DatasetCatalog.get(f"{prefix}_val_classification")
    assert sum(s["task"] == "ins_seg" and s["category_id"] == 1 for s in val) == 2  # the cars of im1, im2


def _spec(tmp_path, text: str) -> Path:
    spec = tmp_path / "p.yaml"
    spec.write_text(text)
    return spec


@pytest.mark.parametrize("text, message", [
    ("classes: [a, b]\ndatasets: {s: {images: i, panoptic: p, panoptic_json: j.json}}\n",
     "is panoptic, so the file must give 'categories'"),
    ("categories: [{id: 1, name: a}]\ndatasets: {s: {images: i, panoptic: p}}\n",
     r"needs \['images', 'panoptic', 'panoptic_json'\]"),
    ("categories: [{id: 1, name: a}, {id: 1, name: b}]\ndatasets: {s: {images: i, labels: l}}\n",
     "distinct non-negative integer ids"),
    ("categories: [{id: 1, name: a, isthing: 2}]\ndatasets: {s: {images: i, labels: l}}\n",
     "distinct non-negative integer ids"),
    ("categories: [{id: 1, name: a, isthing: yes please}]\ndatasets: {s: {images: i, labels: l}}\n",
     "distinct non-negative integer ids"),
    ("categories: [a, b]\ndatasets: {s: {images: i, labels: l}}\n", r"must be a list of \{id, name, isthing\}"),
    ("classes: [a]\ncategories: [{id: 1, name: a}]\ndatasets: {s: {images: i, labels: l}}\n",
     "exactly one of"),
    ("categories_file: absent.json\ndatasets: {s: {images: i, labels: l}}\n", "categories_file .*absent.json does not exist"),
])
def test_bad_panoptic_files_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(FreeSegError, match=message):
        register_custom(str(_spec(tmp_path, text)))


def _load_error(spec: Path, name: str) -> str:
    with registered_file(spec), pytest.raises(FreeSegError) as e:
        DatasetCatalog.get(name)
    return str(e.value)


def test_unknown_categories_and_missing_json_are_named_when_loaded(tmp_path):
    spec = write_panoptic_data(tmp_path, "custom_pan_unknown")
    text = spec.read_text().replace('{"id": 3, "name": "car", "isthing": 1}, ', "").replace("unseen: [car]", "unseen: [road]")
    spec.write_text(text)
    assert "category ids 3 that" in _load_error(spec, "custom_pan_unknown_val")
    spec.write_text(text.replace("panoptic_val.json", "gone.json"))
    assert "gone.json not found" in _load_error(spec, "custom_pan_unknown_val")


def test_unwritable_semantic_map_folder_names_the_labels_key(tmp_path, monkeypatch):
    spec = write_panoptic_data(tmp_path, "custom_pan_readonly")
    with monkeypatch.context() as m:  # as a user who may not write there (tests may run as root)
        m.setattr(os, "access", lambda path, mode: False)
        message = _load_error(spec, "custom_pan_readonly_val")
    assert "cannot write the semantic maps" in message and "'labels' in" in message


def test_labels_key_names_existing_semantic_maps(tmp_path):
    spec = write_panoptic_data(tmp_path, "custom_pan_labels")
    spec.write_text(spec.read_text().replace("panoptic_json: panoptic_val.json}",
                                             "panoptic_json: panoptic_val.json, labels: sem}"))
    assert re.search(r"folder .*/sem not found; fix its path in", _load_error(spec, "custom_pan_labels_val"))
    (tmp_path / "sem").mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 64), 2, np.uint8)).save(tmp_path / "sem" / f"im{i}.png")
    with registered_file(spec):
        val = DatasetCatalog.get("custom_pan_labels_val")
    assert Path(val[0]["sem_seg_file_name"]) == tmp_path / "sem" / "im0.png"
    assert not (tmp_path / "panoptic" / "val_semseg").exists()  # nothing derived
