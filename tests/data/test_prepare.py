"""Every preparation script on tiny data sets in the published formats, and every output checked."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from freeseg.cli.main import run_command
from freeseg.data import DatasetCatalog
from freeseg.data.builtin.classes import load_classes
from freeseg.utils.errors import FreeSegError

from .fakes import coco_image

STUFF = load_classes("coco_stuff_171")
ALL_IDS = [c["id"] for c in STUFF["categories"]]
UNSEEN = STUFF["unseen_ids"]
BASE_IDS = [i for i in ALL_IDS if i not in UNSEEN]


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _ids(path: Path) -> np.ndarray:
    rgb = _png(path).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _prep(*argv: str) -> None:
    assert run_command("prepare", [*argv, "--nproc", "2", "--subset"]) == 0


def test_coco_stuff_label_maps(coco_root: Path) -> None:
    _prep("prepare_coco_stuff_164k_sem_seg", str(coco_root))
    out = coco_root / "stuffthingmaps_detectron2"
    stuff0, _, _ = coco_image(0)
    full = _png(out / "train2017" / "000000000001.png")
    for cid in (157, 124, 149, 1, 21):  # sky-other, grass, road, person, cow
        assert (full[stuff0 == cid - 1] == ALL_IDS.index(cid)).all()
    assert (full[stuff0 == 255] == 255).all()
    base = _png(out / "train2017_base" / "000000000001.png")
    assert (base[stuff0 == 156] == BASE_IDS.index(157)).all() and (base[stuff0 == 20] == 255).all()
    novel = _png(out / "train2017_novel" / "000000000001.png")
    assert (novel[stuff0 == 20] == UNSEEN.index(21)).all() and (novel[stuff0 == 0] == 255).all()
    # image 3 holds only unseen classes: no base map (all-ignore maps are skipped), a novel map
    assert not (out / "train2017_base" / "000000000003.png").exists()
    assert (out / "train2017_novel" / "000000000003.png").exists()
    counts = json.loads((out / "train2017_base_label_count.json").read_text())
    assert sorted(counts) == ["000000000001.png", "000000000002.png"]
    assert counts["000000000001.png"] == sorted(BASE_IDS.index(c) for c in (1, 157))
    # skipping outputs that exist: a second run leaves a modified file alone
    marker = out / "train2017" / "000000000002.png"
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(marker)
    _prep("prepare_coco_stuff_164k_sem_seg", str(coco_root))
    assert _png(marker).shape == (2, 2)


def test_coco_stuff_requires_published_counts(coco_root: Path, capsys) -> None:
    assert run_command("prepare", ["prepare_coco_stuff_164k_sem_seg", str(coco_root), "--nproc", "1"]) == 2
    assert "published data set has 118287" in capsys.readouterr().err
    assert not (coco_root / "stuffthingmaps_detectron2" / "train2017").exists()  # checked before any work


def test_coco_alldata_panoptic_and_loader(coco_root: Path) -> None:
    _prep("prepare_coco_alldata", str(coco_root), "--panoptic-semseg")
    pan_dir = coco_root / "panoptic_detectron2"
    js = json.loads((pan_dir / "panoptic_train2017.json").read_text())
    ann = {a["file_name"]: a for a in js["annotations"]}["000000000001.png"]
    cats = sorted(s["category_id"] for s in ann["segments_info"])
    # merged panoptic stuff (187, 193) dropped; sky-other and grass rebuilt from the stuff map
    assert cats == [1, 1, 21, 124, 149, 157]
    ids = _ids(pan_dir / "train2017" / "000000000001.png")
    stuff0, pan0, _ = coco_image(0)
    for s in ann["segments_info"]:
        m = ids == s["id"]
        ys, xs = np.nonzero(m)
        assert s["area"] == m.sum() and s["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
        if s["category_id"] in (124, 157):
            assert s["id"] == (s["category_id"] - 1) * 65793 and (m == (stuff0 == s["category_id"] - 1)).all()
        else:
            assert (m == (pan0 == s["id"])).all()
    base = json.loads((pan_dir / "panoptic_train2017_base.json").read_text())
    assert {c["id"] for c in base["categories"]} == set(BASE_IDS)
    b_ann = {a["file_name"]: a for a in base["annotations"]}
    assert "000000000003.png" not in b_ann  # only unseen classes
    assert sorted(s["category_id"] for s in b_ann["000000000001.png"]["segments_info"]) == [1, 1, 157]
    novel = json.loads((pan_dir / "panoptic_val2017_novel.json").read_text())
    n_ann = {a["file_name"]: a for a in novel["annotations"]}["000000000101.png"]
    assert sorted(s["category_id"] for s in n_ann["segments_info"]) == [21, 124, 149]
    assert (coco_root / "stuffthingmaps_panoptic_detectron2" / "train2017_base_label_count.json").exists()
    # panoptic_semseg: COCO panoptic 133 contiguous ids
    pan133 = [c["id"] for c in load_classes("coco_panoptic_133")["categories"]]
    sem = _png(coco_root / "panoptic_semseg_train2017" / "000000000001.png")
    assert (sem[pan0 == 9001] == pan133.index(187)).all() and (sem[pan0 == 0] == 255).all()

    # the built-in loaders read these outputs
    dicts = DatasetCatalog.get("coco_2017_train_full_task_base")
    assert len(dicts) == 2
    segs = dicts[0]["segments_info"]
    assert {s["category_id"] for s in segs} == {BASE_IDS.index(1), BASE_IDS.index(157)}
    assert sum(s["isthing"] for s in segs) == 2
    cls = DatasetCatalog.get("coco_2017_train_full_task_base_classification")
    tasks = [d["task"] for d in cls]
    assert tasks.count("sem_seg") == 4 and tasks.count("ins_seg") == 2 and tasks.count("pan_seg") == 4
    pan = DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert len(pan) == 2 and len(pan[0]["segments_info"]) == 6


def test_voc_writes_all_splits_including_val_base(voc_root: Path) -> None:
    _prep("prepare_voc_sem_seg", str(voc_root))
    out = voc_root / "annotations_detectron2"
    for d in ("train", "val", "train_base", "val_base", "train_novel", "val_novel"):
        assert (out / d).is_dir() and (out / f"{d}_label_count.json").exists(), d
    lab = _png(out / "train" / "2007_000000.png")
    assert set(np.unique(lab)) == {14, 16, 255}  # person 15 -> 14, sheep 17 -> 16, bg/boundary -> 255
    assert set(np.unique(_png(out / "train_base" / "2007_000000.png"))) == {14, 255}
    assert set(np.unique(_png(out / "train_novel" / "2007_000000.png"))) == {1, 255}  # sheep = 2nd unseen
    assert set(np.unique(_png(out / "val_base" / "2008_000000.png"))) == {14, 255}
    assert not (out / "train" / "2007_000001.png").exists()  # background only
    assert len(list((out / "train").glob("*.png"))) == 3
    assert sorted(json.loads((out / "val_label_count.json").read_text())["2008_000000.png"]) == [14, 16]
    dicts = DatasetCatalog.get("voc_base_sem_seg_train_classification")
    assert sorted((d["image_id"], d["category_id"]) for d in dicts)[:2] == [("2007_000000", 14), ("2007_000002", 14)]


def test_voc_missing_list_is_named(voc_root: Path) -> None:
    (voc_root / "val.txt").unlink()
    with pytest.raises(FreeSegError, match="no val list"):
        from freeseg.cli.prepare import main

        main(["prepare_voc_sem_seg", str(voc_root), "--subset"])


def test_ade_semantic_panoptic_instance(ade_root: Path) -> None:
    _prep("prepare_ade20k_sem_seg_novel", str(ade_root))
    ade = load_classes("ade20k_150")
    unseen = ade["unseen_ids"]
    base_ids = [i for i in range(150) if i not in unseen]
    out = ade_root / "annotations_detectron2"
    sem = _png(ade_root / "annotations" / "training" / "ADE_train_00000001.png")
    full = _png(out / "training" / "ADE_train_00000001.png")
    assert (full == np.where(sem == 0, 255, sem.astype(int) - 1)).all()
    base = _png(out / "training_base" / "ADE_train_00000001.png")
    assert (base[sem == 3] == base_ids.index(2)).all() and (base[sem == 10] == 255).all()
    novel = _png(out / "validation_novel" / "ADE_valid_00000001.png")
    assert (novel[sem == 10] == unseen.index(9)).all() and (novel[sem == 16] == unseen.index(15)).all()

    _prep("prepare_ade20k_pan_seg_novel", str(ade_root))
    pj = json.loads((ade_root / "ade20k_panoptic_train.json").read_text())
    segs = pj["annotations"][0]["segments_info"]
    assert sorted(s["category_id"] for s in segs) == [0, 2, 9, 12, 12, 15]
    ids = _ids(ade_root / "ade20k_panoptic_train" / "ADE_train_00000001.png")
    for s in segs:
        assert s["area"] == (ids == s["id"]).sum() > 0
    things = {c["id"] for c in pj["categories"] if c["isthing"]}
    assert things == {7, 12, 15}
    bj = json.loads((ade_root / "ade20k_panoptic_val_base.json").read_text())
    assert sorted(s["category_id"] for s in bj["annotations"][1]["segments_info"]) == [0, 2, 12, 12]
    nj = json.loads((ade_root / "ade20k_panoptic_train_novel.json").read_text())
    assert sorted(s["category_id"] for s in nj["annotations"][0]["segments_info"]) == [9, 15]

    _prep("prepare_ade20k_ins_seg_novel", str(ade_root))
    ij = json.loads((ade_root / "ade20k_instance_train_base.json").read_text())
    assert [a["category_id"] for a in ij["annotations"]].count(12) == 4 and len(ij["annotations"]) == 4
    from pycocotools import mask as mask_utils

    m = mask_utils.decode(ij["annotations"][0]["segmentation"])
    assert m.sum() == ij["annotations"][0]["area"] == 14 * 10

    dicts = DatasetCatalog.get("ade20k_all_train_base")
    assert len(dicts) == 2 and all("sem_seg_file_name" in d for d in dicts)


def test_mask_cls_collect_default_path(voc_root: Path, tmp_path: Path) -> None:
    _prep("prepare_voc_sem_seg", str(voc_root))
    gt = voc_root / "annotations_detectron2" / "train"
    (tmp_path / "x_label_count.json").unlink(missing_ok=True)
    out = tmp_path / "counts.json"
    assert run_command("prepare", ["mask_cls_collect", str(gt), str(out), "--nproc", "1"]) == 0
    assert json.loads(out.read_text()) == json.loads((gt.parent / "train_label_count.json").read_text())


@pytest.mark.parametrize("nproc", ["1", "2"])
def test_corrupt_input_label_map_is_one_line_naming_it(voc_root: Path, nproc: str, capsys) -> None:
    bad = voc_root / "SegmentationClassAug" / "2007_000002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert run_command("prepare", ["prepare_voc_sem_seg", str(voc_root), "--nproc", nproc, "--subset"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: label map ") and "2007_000002.png cannot be read" in err
    assert run_command("prepare", ["mask_cls_collect", str(bad.parent), "--nproc", nproc]) == 2
    assert "2007_000002.png cannot be read" in capsys.readouterr().err


def test_mask_cls_collect_creates_the_output_folder(voc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder" / "counts.json"
    gt = voc_root / "SegmentationClassAug"
    assert run_command("prepare", ["mask_cls_collect", str(gt), str(out), "--nproc", "1"]) == 0
    assert json.loads(out.read_text())["2007_000000.png"] == [0, 15, 17]  # 255 left out


def test_interrupted_write_leaves_nothing_a_rerun_would_keep(tmp_path: Path, monkeypatch) -> None:
    from freeseg.data.prepare.common import make_lut, write_remapped

    src = np.array([[1, 2], [2, 1]], np.uint8)
    lut = make_lut({1: 0, 2: 1})
    dst = tmp_path / "out.png"

    def killed_while_saving(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n")  # the first bytes, then the run is interrupted
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Image.Image, "save", killed_while_saving)
        with pytest.raises(KeyboardInterrupt):
            write_remapped(src, {str(dst): lut})
    assert list(tmp_path.iterdir()) == []  # no truncated PNG (nor temporary file) left
    write_remapped(src, {str(dst): lut})  # the rerun writes it
    np.testing.assert_array_equal(_png(dst), lut[src])
