"""Your own semantic data sets from a YAML file (freeseg/data/custom.py)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from freeseg.data.catalog import DatasetCatalog, MetadataCatalog
from freeseg.data.custom import register_custom
from freeseg.data.mappers.common import read_label_map
from freeseg.utils.errors import FreeSegError

CLASSES = ["road", "car", "tree", "sky"]


def write_custom_data(root: Path, prefix: str, n: int = 3) -> Path:
    """``n`` images per split whose label maps hold quadrants of road / car / tree / sky (value i
    = CLASSES[i]) and an ignored border; returns the YAML file describing them."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            labels = np.full((64, 64), 255, np.uint8)
            labels[2:32, 2:32], labels[2:32, 32:62], labels[32:62, 2:32], labels[32:62, 32:62] = 0, 1, 2, 3
            if i == 0:
                labels[32:62, 2:32] = 0  # no tree in the first image
            colours = np.array([[90, 90, 90], [200, 30, 30], [30, 150, 30], [120, 170, 250], [0, 0, 0]], np.uint8)
            image = colours[np.minimum(labels, 4)]
            Image.fromarray(image).save(root / "images" / split / f"im{i}.png")
            Image.fromarray(labels).save(root / "labels" / split / f"im{i}.png")
    spec = root / "mydata.yaml"
    spec.write_text(
        f"classes: {json.dumps(CLASSES)}\nunseen: [tree]\ndatasets:\n"
        f"  {prefix}_train: {{images: images/train, labels: labels/train, classes: seen}}\n"
        f"  {prefix}_val: {{images: images/val, labels: labels/val}}\n"
    )
    return spec


@contextlib.contextmanager
def registered_file(spec: Path) -> Iterator[list[str]]:
    """The data sets of the YAML file ``spec``, registered for the ``with`` block."""
    names = register_custom(str(spec))
    try:
        yield names
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


@pytest.fixture
def registered(tmp_path, request):
    prefix = f"custom_{request.node.name.split('[')[0][-20:]}"
    spec = write_custom_data(tmp_path, prefix)
    with registered_file(spec) as names:
        yield prefix, spec, names


def test_registers_train_and_val_with_the_zero_shot_split(registered):
    prefix, spec, names = registered
    assert sorted(names) == sorted(f"{prefix}_{s}{c}" for s in ("train", "val") for c in ("", "_classification"))
    train, val = MetadataCatalog.get(f"{prefix}_train"), MetadataCatalog.get(f"{prefix}_val")
    assert train.stuff_classes == ["road", "car", "sky"] and train.get("trainable_flag") is None
    assert val.stuff_classes == CLASSES and val.trainable_flag == [1, 1, 0, 1]
    assert val.evaluator_type == "sem_seg" and MetadataCatalog.get(f"{prefix}_val_classification").evaluator_type == "classification"
    assert register_custom(str(spec)) == []  # the same file again: nothing new


def test_seen_only_sets_ignore_unseen_pixels_and_renumber(registered):
    prefix, _, _ = registered
    train = DatasetCatalog.get(f"{prefix}_train")
    assert len(train) == 3 and all(r["sem_seg_lut"][:4] == [0, 1, 255, 2] for r in train)
    labels = read_label_map(train[1]["sem_seg_file_name"], train[1]["sem_seg_lut"])
    assert labels[40, 10] == 255 and labels[40, 40] == 2 and labels[10, 40] == 1 and labels[0, 0] == 255
    val = DatasetCatalog.get(f"{prefix}_val")
    assert "sem_seg_lut" not in val[0]
    assert read_label_map(val[1]["sem_seg_file_name"], val[1].get("sem_seg_lut"))[40, 10] == 2


def test_classification_samples_per_class_present(registered):
    prefix, _, _ = registered
    samples = DatasetCatalog.get(f"{prefix}_train_classification")
    by_image = {}
    for s in samples:
        by_image.setdefault(Path(s["file_name"]).stem, []).append(s["category_id"])
    # seen ids: road 0, car 1, sky 2; the tree quadrant gives no sample
    assert by_image == {"im0": [0, 1, 2], "im1": [0, 1, 2], "im2": [0, 1, 2]}
    val = DatasetCatalog.get(f"{prefix}_val_classification")
    assert sorted(s["category_id"] for s in val if Path(s["file_name"]).stem == "im1") == [0, 1, 2, 3]


@pytest.mark.parametrize("text, message", [
    ("classes: [a, b]\nlabels: x\ndatasets: {}\n", r"unknown keys \['labels'\]"),
    ("classes: [a, b]\nunseen: [c]\ndatasets: {s: {images: i, labels: l}}\n", r"unseen classes \['c'\] are not among"),
    ("classes: [a, a]\ndatasets: {s: {images: i, labels: l}}\n", "distinct names"),
    ("classes: [a, b]\ndatasets: {s: {images: i, labels: l, classes: seen}}\n", "lists no 'unseen' classes"),
    ("classes: [a, b]\ndatasets: {s: {images: i}}\n", r"needs \['images', 'labels'\]"),
    ("classes: [a, b]\ndatasets: {voc_sem_seg_test: {images: i, labels: l}}\n", "'voc_sem_seg_test' is taken"),
    ("classes: [a, b\n", "is not valid YAML"),
])
def test_bad_files_are_one_line_errors(tmp_path, text, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(FreeSegError, match=message):
        register_custom(str(spec))
    with pytest.raises(FreeSegError, match="does not exist; check DATASETS.CUSTOM"):
        register_custom(str(tmp_path / "absent.yaml"))


def test_missing_folder_is_named_when_loaded(tmp_path):
    spec = tmp_path / "d.yaml"
    spec.write_text("classes: [a, b]\ndatasets: {custom_missing_folder: {images: nowhere, labels: nolabels}}\n")
    with registered_file(spec), pytest.raises(FreeSegError, match=r"folder .*nowhere not found; fix its path in .*d.yaml"):
        DatasetCatalog.get("custom_missing_folder")
