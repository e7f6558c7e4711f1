"""Your own instance data sets (COCO instance JSON) from a YAML file (freeseg/data/custom.py,
freeseg/data/prepare/instances.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from freeseg.data.catalog import DatasetCatalog, MetadataCatalog
from freeseg.data.custom import register_custom
from freeseg.data.mappers.common import read_label_map, read_panoptic_ids
from freeseg.data.mappers.full_task import FullTaskMapper
from freeseg.utils.errors import FreeSegError
from tests.data.test_custom import registered_file

CATEGORIES = [{"id": 7, "name": "person"}, {"id": 3, "name": "car"}, {"id": 12, "name": "dog"}]


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((64, 64), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major mask, starting with zeros."""
    flat = mask.flatten(order="F")
    runs, value, count = [], 0, 0
    for v in flat:
        if v != value:
            runs.append(count)
            value, count = v, 0
        count += 1
    return {"size": list(mask.shape), "counts": runs + [count]}


def _annotations(i: int) -> list[dict]:
    """A big person, a car overlapping it, a small person in front of the car (a polygon), and
    in image 0 a crowd of dogs instead of the car."""
    anns = [
        {"category_id": 7, "segmentation": _rle(_box(4, 60, 4, 30)), "iscrowd": 0},
        {"category_id": 7, "segmentation": [[40.0, 30.0, 52.0, 30.0, 52.0, 50.0, 40.0, 50.0]], "iscrowd": 0},
    ]
    if i == 0:
        anns.append({"category_id": 12, "segmentation": _rle(_box(2, 10, 34, 62)), "iscrowd": 1})
    else:
        anns.append({"category_id": 3, "segmentation": _uncompressed(_box(20, 56, 20, 60)), "iscrowd": 0})
    for k, a in enumerate(anns):
        a.update(id=10 * i + k + 1, image_id=100 + i, area=1.0, bbox=[0, 0, 1, 1])
    return anns


def write_instance_data(root: Path, prefix: str, n: int = 3) -> Path:
    """``n`` images per split with a COCO instance JSON each, and the YAML file (car unseen; the
    training set seen-only)."""
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        images, anns = [], []
        for i in range(n):
            Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(root / "images" / split / f"im{i}.jpg")
            images.append({"id": 100 + i, "file_name": f"im{i}.jpg", "height": 64, "width": 64})
            anns += _annotations(i)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    spec = root / "myinstances.yaml"
    spec.write_text(
        "categories_file: annotations/instances_val.json\nunseen: [car]\ndatasets:\n"
        f"  {prefix}_train: {{images: images/train, instances: annotations/instances_train.json, classes: seen}}\n"
        f"  {prefix}_val: {{images: images/val, instances: annotations/instances_val.json}}\n"
    )
    return spec


@pytest.fixture
def registered(tmp_path, request):
    prefix = f"custom_ins_{request.node.name[-20:]}"
    spec = write_instance_data(tmp_path, prefix)
    with registered_file(spec) as names:
        yield prefix, tmp_path, names


def test_registers_instance_sets_every_class_a_thing(registered):
    prefix, root, names = registered
    assert sorted(names) == sorted(f"{prefix}_{s}{c}" for s in ("train", "val") for c in ("", "_classification"))
    train, val = MetadataCatalog.get(f"{prefix}_train"), MetadataCatalog.get(f"{prefix}_val")
    assert train.thing_classes == train.stuff_classes == ["person", "dog"]
    assert val.thing_dataset_id_to_contiguous_id == {7: 0, 3: 1, 12: 2} and val.trainable_flag == [1, 0, 1]
    assert val.evaluation_set == {"base": [0, 2], "novel_thing": [1], "novel_stuff": []}
    assert val.evaluator_type == "coco" and val.json_file == str(root / "annotations" / "instances_val.json")


def test_instances_become_panoptic_segments_smaller_on_top(registered):
    prefix, root, _ = registered
    val = DatasetCatalog.get(f"{prefix}_val")
    assert [(Path(r["file_name"]).name, r["image_id"]) for r in val] == [("im0.jpg", 100), ("im1.jpg", 101), ("im2.jpg", 102)]
    ids = read_panoptic_ids(val[1]["pan_seg_file_name"])
    segs = {s["id"]: s for s in val[1]["segments_info"]}
    cat_at = lambda y, x: segs[ids[y, x]]["category_id"]  # noqa: E731
    assert cat_at(10, 10) == 0 and cat_at(25, 25) == 1 and cat_at(45, 45) == 0  # small person over the car over the big one
    assert ids[62, 62] == 0 and all(s["isthing"] and not s["iscrowd"] for s in segs.values())
    sem = read_label_map(val[1]["sem_seg_file_name"])
    assert (sem[10, 10], sem[25, 25], sem[45, 45], sem[62, 62]) == (0, 1, 0, 255)
    crowd = [s for s in val[0]["segments_info"] if s["iscrowd"]]
    assert [(s["category_id"], s["area"]) for s in crowd] == [(2, 8 * 28)]
    assert Path(val[0]["pan_seg_file_name"]).parent == root / "annotations" / "instances_val_panoptic"


def test_conversion_is_cached_until_the_json_changes(registered):
    prefix, root, _ = registered
    assert any(s["category_id"] == 1 for s in DatasetCatalog.get(f"{prefix}_val_classification"))  # cars
    first = DatasetCatalog.get(f"{prefix}_val")
    png = Path(first[1]["pan_seg_file_name"])
    stamp = png.stat().st_mtime_ns
    DatasetCatalog.get(f"{prefix}_val")
    assert png.stat().st_mtime_ns == stamp  # not converted again
    json_file = root / "annotations" / "instances_val.json"
    info = json.loads(json_file.read_text())
    info["annotations"] = [a for a in info["annotations"] if a["category_id"] != 3]  # no cars any more
    json_file.write_text(json.dumps(info))
    again = DatasetCatalog.get(f"{prefix}_val")
    assert all(s["category_id"] != 1 for r in again for s in r["segments_info"])
    assert read_label_map(again[1]["sem_seg_file_name"])[25, 25] == 0  # the big person's pixel again
    assert all(s["category_id"] != 1 for s in DatasetCatalog.get(f"{prefix}_val_classification"))  # counts redone


def test_reordered_classes_convert_again(tmp_path):
    spec = write_instance_data(tmp_path, "custom_ins_order")
    with registered_file(spec):
        before = read_label_map(DatasetCatalog.get("custom_ins_order_val")[1]["sem_seg_file_name"])
    reordered = [CATEGORIES[2], CATEGORIES[0], CATEGORIES[1]]  # dog, person, car
    spec.write_text(spec.read_text().replace("categories_file: annotations/instances_val.json",
                                             f"categories: {json.dumps(reordered)}"))
    with registered_file(spec):
        after = read_label_map(DatasetCatalog.get("custom_ins_order_val")[1]["sem_seg_file_name"])
    assert (before[10, 10], before[25, 25]) == (0, 1) and (after[10, 10], after[25, 25]) == (1, 2)


def test_seen_only_training_set_drops_unseen_instances(registered):
    prefix, _, _ = registered
    train = DatasetCatalog.get(f"{prefix}_train")
    assert sorted(s["category_id"] for s in train[1]["segments_info"]) == [0, 0]
    out = FullTaskMapper(augmentations=[], num_classes=2)(train[1])
    assert out["sem_seg"][25, 25] == 255 and out["sem_seg"][10, 10] == 0
    assert out["ins_instances"]["gt_classes"].tolist() == [0, 0]
    crowd_image = FullTaskMapper(augmentations=[], num_classes=2)(train[0])
    assert crowd_image["ins_instances"]["gt_classes"].tolist() == [0, 0]  # the crowd is no target
    samples = DatasetCatalog.get(f"{prefix}_train_classification")
    assert sum(s["task"] == "ins_seg" for s in samples) == 6 and all(s["category_id"] in (0, 1) for s in samples)


def test_bad_instance_files_are_one_line_errors(tmp_path):
    spec = write_instance_data(tmp_path, "custom_ins_bad")
    text = spec.read_text()
    spec.write_text(text.replace("categories_file: annotations/instances_val.json",
                                 'categories: [{"id": 7, "name": "person"}, {"id": 3, "name": "car"}]'))
    with registered_file(spec), pytest.raises(FreeSegError, match="category ids 12 that .*does not list"):
        DatasetCatalog.get("custom_ins_bad_val")
    spec.write_text(text.replace("annotations/instances_val.json}", "annotations/gone.json}"))
    with registered_file(spec), pytest.raises(FreeSegError, match="instance JSON .*gone.json not found; fix its path"):
        DatasetCatalog.get("custom_ins_bad_val")
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps({"annotations": []}))
    spec.write_text(text.replace("categories_file: annotations/instances_val.json", "categories: [{id: 7, name: a}]")
                    .replace("unseen: [car]\n", "").replace(", classes: seen", ""))
    with registered_file(spec), pytest.raises(FreeSegError, match=r"lacks the lists \['images', 'annotations'\]"):
        DatasetCatalog.get("custom_ins_bad_val")
    info = {"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}], "categories": [],
            "annotations": [{"image_id": 2, "category_id": 7, "segmentation": []}]}
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(info))
    with registered_file(spec), pytest.raises(FreeSegError, match="annotations of image ids 2 that its 'images' do not list"):
        DatasetCatalog.get("custom_ins_bad_val")
    del info["images"][0]["height"]
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(info))
    with registered_file(spec), pytest.raises(FreeSegError, match=r"an entry of 'images' lacks \['height'\]"):
        DatasetCatalog.get("custom_ins_bad_val")
    os.remove(tmp_path / "annotations" / "instances_val.json")
    spec.write_text(text)
    with pytest.raises(FreeSegError, match="categories_file .*instances_val.json does not exist"):
        register_custom(str(spec))


def test_prepare_custom_loads_every_set_once_and_prints_sizes(tmp_path, capsys):
    from freeseg.cli.prepare import main

    spec = write_instance_data(tmp_path, "custom_ins_prepare")
    try:
        assert main(["custom", str(spec)]) == 0
    finally:
        for name in [n for n in list(DatasetCatalog) if n.startswith("custom_ins_prepare_")]:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    printed = dict(line.rsplit(": ", 1) for line in capsys.readouterr().out.splitlines())
    # 3 images. Stage-1 samples of the seen-only set: semantic person x3 and dog x1 (the crowd),
    # 6 people as instances and again as panoptic segments (a crowd is no sample); of the val
    # set: semantic person x3, car x2, dog x1, and 8 instances (people and cars) twice
    assert printed == {"custom_ins_prepare_train": "3", "custom_ins_prepare_val": "3",
                       "custom_ins_prepare_train_classification": str(3 + 1 + 6 + 6),
                       "custom_ins_prepare_val_classification": str(3 + 2 + 1 + 8 + 8)}
    for split in ("train", "val"):  # converted now, not by the training's processes
        assert (tmp_path / "annotations" / f"instances_{split}_panoptic.json").exists()
        assert (tmp_path / "annotations" / f"instances_{split}_semseg_label_count.json").exists()
