"""The demo end to end on fixture A's real FreeSeg checkpoint and real photos (scikit-image):
every output is written, re-loads, and equals the model's predictions of that run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from freeseg.cli import demo
from freeseg.cli.main import run_command
from freeseg.cli.predictor import DemoPredictor
from freeseg.modeling.clip.prompt_learner import PromptLearner
from freeseg.utils.colors import rgb_to_id

NAMES = "person,cat,dog,wine glass,cow,grass,sky-other,tree,wall-concrete,table"
TASKS = ["semantic", "instance", "panoptic", "entity"]


def _photos(folder: Path) -> dict[str, np.ndarray]:
    skdata = pytest.importorskip("skimage.data")
    folder.mkdir(parents=True, exist_ok=True)
    photos = {
        # sizes chosen so the two images differ (no batching across sizes) and stay small
        "astronaut": np.asarray(Image.fromarray(skdata.astronaut()).resize((200, 200), Image.BICUBIC)),
        "chelsea": np.asarray(Image.fromarray(skdata.chelsea()).resize((240, 160), Image.BICUBIC)),
    }
    for name, img in photos.items():
        Image.fromarray(img).save(folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return photos


@pytest.fixture(scope="module")
def demo_run(fixture_a, tmp_path_factory):
    """Run the demo once with every task; record what the model returned and how often text
    features were computed."""
    tmp = tmp_path_factory.mktemp("demo")
    photos = _photos(tmp / "in")
    recorded: list[dict] = []
    text_calls: list[str] = []
    mp = pytest.MonkeyPatch()
    original_call = DemoPredictor.__call__
    original_prompts = PromptLearner.forward

    def spy_call(self, images):
        out = original_call(self, images)
        recorded.extend(out)
        return out

    def spy_prompts(self, class_names, task, clip_model):
        text_calls.append(task)
        return original_prompts(self, class_names, task, clip_model)

    mp.setattr(DemoPredictor, "__call__", spy_call)
    mp.setattr(PromptLearner, "forward", spy_prompts)
    out = tmp / "out"
    try:
        code = run_command("demo", [
            "--config-file", str(fixture_a / "config.yaml"),
            "--input", str(tmp / "in"),
            "--output", str(out),
            "--vocabulary", NAMES,
            "--stuff", "grass,sky-other,tree,wall-concrete",
            "--task", *TASKS,
            "--confidence-threshold", "0.05",
            "MODEL.WEIGHTS", str(fixture_a / "model_final.pth"),
            # CLIP from a local file (here the checkpoint itself): the tiny CLIP is built
            # directly instead of a random ViT-B/16 that the checkpoint then replaces
            "MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", str(fixture_a / "model_final.pth"),
        ])
    finally:
        mp.undo()
    # inputs are visited in sorted order: astronaut, broken (skipped), chelsea
    return {"code": code, "out": out, "photos": photos, "outputs": dict(zip(["astronaut", "chelsea"], recorded)),
            "text_calls": text_calls, "n_recorded": len(recorded)}


def test_demo_writes_every_output(demo_run):
    assert demo_run["code"] == 0
    assert demo_run["n_recorded"] == 2  # the broken file was skipped, not fed to the model
    out = demo_run["out"]
    for stem in ("astronaut", "chelsea"):
        for suffix in ("semantic.png", "semantic_labels.png", "panoptic.png", "panoptic_ids.png", "panoptic.json",
                       "instances.png", "instances.json", "entity.png", "entity_ids.png", "entity.json"):
            assert (out / f"{stem}_{suffix}").is_file(), f"{stem}_{suffix} missing"
    assert not list(out.glob("broken*"))
    vocab = json.loads((out / "vocabulary.json").read_text())["classes"]
    assert [c["name"] for c in vocab] == NAMES.split(",")
    assert [c["isthing"] for c in vocab] == [1, 1, 1, 1, 1, 0, 0, 0, 0, 1]


def test_text_features_once_per_task_per_run(demo_run):
    # 2 images x 3 tasks would be 6 computations without the cache; the entity mode adds none
    assert sorted(demo_run["text_calls"]) == sorted(["semantic segmentation.", "instance segmentation.", "panoptic segmentation."])


def test_outputs_keep_the_original_size(demo_run):
    for stem, photo in demo_run["photos"].items():
        h, w = photo.shape[:2]
        assert demo_run["outputs"][stem]["sem_seg"].shape[-2:] == (h, w)
        for suffix in ("semantic_labels.png", "panoptic_ids.png", "entity_ids.png"):
            assert Image.open(demo_run["out"] / f"{stem}_{suffix}").size == (w, h)
        overlay = Image.open(demo_run["out"] / f"{stem}_instances.png")
        assert overlay.size == (w, h)
        legend = Image.open(demo_run["out"] / f"{stem}_semantic.png")
        assert legend.size[1] == h and legend.size[0] > w  # legend panel on the right


def test_label_map_is_argmax_of_sem_seg(demo_run):
    for stem, output in demo_run["outputs"].items():
        labels = np.asarray(Image.open(demo_run["out"] / f"{stem}_semantic_labels.png"))
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, output["sem_seg"].argmax(0).numpy())


def test_panoptic_png_and_json_match_the_model(demo_run):
    total_segments = 0
    for stem, output in demo_run["outputs"].items():
        ids_model, segments = output["panoptic_seg"]
        kept = [s for s in segments if s["score"] >= 0.05]
        expected = np.where(np.isin(ids_model.numpy(), [s["id"] for s in kept]), ids_model.numpy(), 0)
        ids = rgb_to_id(np.asarray(Image.open(demo_run["out"] / f"{stem}_panoptic_ids.png").convert("RGB")))
        np.testing.assert_array_equal(ids, expected)
        info = json.loads((demo_run["out"] / f"{stem}_panoptic.json").read_text())
        assert info["file_name"] == f"{stem}_panoptic_ids.png"
        assert [s["id"] for s in info["segments_info"]] == [s["id"] for s in kept]
        for seg, ref in zip(info["segments_info"], kept):
            assert seg["category_id"] == ref["category_id"]
            assert seg["category_name"] == NAMES.split(",")[ref["category_id"]]
            assert seg["area"] == int((ids == seg["id"]).sum()) > 0
            x, y, w, h = seg["bbox"]
            assert (ids[y:y + h, x:x + w] == seg["id"]).sum() == seg["area"]
        total_segments += len(kept)
    assert total_segments > 0  # the comparison above compared something


def test_instances_rle_decode_to_the_model_masks(demo_run):
    total = 0
    for stem, output in demo_run["outputs"].items():
        inst = output["instances"]
        keep = inst["scores"] >= 0.05
        data = json.loads((demo_run["out"] / f"{stem}_instances.json").read_text())
        anns = data["annotations"]
        assert len(anns) == int(keep.sum())
        for ann, mask, score, cls, box in zip(anns, inst["pred_masks"][keep], inst["scores"][keep],
                                              inst["pred_classes"][keep], inst["pred_boxes"][keep]):
            rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
            np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), mask.numpy())
            assert ann["score"] == pytest.approx(float(score))
            assert ann["category_id"] == int(cls)
            x0, y0, x1, y1 = box.tolist()
            assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
        total += len(anns)
    assert total > 0


def test_entity_ids_match_the_model(demo_run):
    for stem, output in demo_run["outputs"].items():
        ids_model, segments = output["entity"]
        kept = [s["id"] for s in segments if s["score"] >= 0.05]
        ids = rgb_to_id(np.asarray(Image.open(demo_run["out"] / f"{stem}_entity_ids.png").convert("RGB")))
        np.testing.assert_array_equal(ids, np.where(np.isin(ids_model.numpy(), kept), ids_model.numpy(), 0))


def test_overlay_shows_the_semantic_classes(demo_run):
    """Pixels of the overlay move towards their class colour (the fill is really drawn)."""
    vocab = json.loads((demo_run["out"] / "vocabulary.json").read_text())["classes"]
    colors = np.array([c["color"] for c in vocab], dtype=np.float64)
    for stem, photo in demo_run["photos"].items():
        labels = np.asarray(Image.open(demo_run["out"] / f"{stem}_semantic_labels.png")).astype(int)
        overlay = np.asarray(Image.open(demo_run["out"] / f"{stem}_semantic.png").convert("RGB"))[:, : photo.shape[1]]
        target = colors[labels]
        before = np.abs(photo.astype(float) - target).mean()
        after = np.abs(overlay.astype(float) - target).mean()
        assert after < 0.6 * before


def test_large_images_are_post_processed_within_the_memory_budget(demo_run, fixture_a, tmp_path, caplog):
    # a budget far below what 200x200 outputs need: post-processed at a reduced size, written at
    # the original size, and close to the full-resolution results
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="freeseg.cli.predictor"):
        code = run_command("demo", [
            "--config-file", str(fixture_a / "config.yaml"), "--input", str(demo_run["out"].parent / "in" / "astronaut.png"),
            "--output", str(out), "--vocabulary", NAMES, "--stuff", "grass,sky-other,tree,wall-concrete",
            "--task", *TASKS, "--confidence-threshold", "0.05", "--output-memory-gb", "0.002",
            "MODEL.WEIGHTS", str(fixture_a / "model_final.pth"),
            "MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", str(fixture_a / "model_final.pth"),
        ])
    assert code == 0
    assert "a 200x200 image's outputs would need more than --output-memory-gb 0.002" in caplog.text
    for suffix in ("semantic_labels.png", "panoptic_ids.png", "entity_ids.png", "instances.png"):
        assert Image.open(out / f"astronaut_{suffix}").size == (200, 200)
    reduced = np.asarray(Image.open(out / "astronaut_semantic_labels.png"))
    full = np.asarray(Image.open(demo_run["out"] / "astronaut_semantic_labels.png"))
    assert (reduced == full).mean() > 0.9  # only boundary pixels may differ
    info = json.loads((out / "astronaut_panoptic.json").read_text())
    ids = rgb_to_id(np.asarray(Image.open(out / "astronaut_panoptic_ids.png")))
    for seg in info["segments_info"]:
        assert seg["area"] == int((ids == seg["id"]).sum()) > 0
    anns = json.loads((out / "astronaut_instances.json").read_text())["annotations"]
    assert anns  # the check below must see instances
    for ann in anns:
        mask = mask_util.decode(ann["segmentation"])
        assert mask.shape == (200, 200)
        x, y, w, h = ann["bbox"]  # the box is the enlarged mask's
        rows, cols = np.nonzero(mask)
        assert (x, y, x + w, y + h) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_output_budget_keeps_the_aspect_and_fits():
    from freeseg.cli.predictor import postprocess_bytes_per_pixel, postprocess_size

    per_pixel = postprocess_bytes_per_pixel(classes=171, queries=100, mask_tasks=2)
    assert postprocess_size(640, 960, per_pixel, 4.0) == (640, 960)  # fits: unchanged
    h, w = postprocess_size(3000, 4000, per_pixel, 4.0)  # a 12 MP photo, all three tasks
    assert h * w * per_pixel <= 4 * 2**30 and abs(w / h - 4 / 3) < 0.01
    assert h * w > 0.98 * 4 * 2**30 / per_pixel  # the largest that fits, not much less
    assert postprocess_size(3000, 4000, postprocess_bytes_per_pixel(171, 100, 0), 4.0)[0] > h  # semantic: larger


# -- bad input: all reported before any image ---------------------------------------------

def _demo(fixture_a: Path, tmp_path: Path, *extra: str, weights: bool = True) -> int:
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    args = ["--config-file", str(fixture_a / "config.yaml"), "--input", str(img), "--output", str(tmp_path / "out"), *extra]
    if weights:
        args += ["MODEL.WEIGHTS", str(fixture_a / "model_final.pth")]
    return run_command("demo", args)


def test_empty_vocabulary_is_an_error(fixture_a, tmp_path, capsys):
    assert _demo(fixture_a, tmp_path, "--vocabulary", " , ,") == 2
    assert "names no classes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "names.txt"
    empty.write_text("# no names here\n\n")
    assert _demo(fixture_a, tmp_path, "--vocabulary", str(empty)) == 2
    assert "vocabulary file" in capsys.readouterr().err


def test_empty_vocabulary_value_and_output_file_fail_before_the_model(fixture_a, tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(DemoPredictor, "from_config", no_model)
    assert _demo(fixture_a, tmp_path, "--vocabulary", "") == 2  # not the test set's classes
    assert "names no classes" in capsys.readouterr().err
    assert _demo(fixture_a, tmp_path, "--vocabulary", "vocab.txt") == 2
    assert "vocabulary file not found: vocab.txt" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert _demo(fixture_a, tmp_path, "--vocabulary", "cat", "--output", str(taken)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output") and "is a file, not a folder" in err and err.count("\n") == 1


def test_no_vocabulary_and_unregistered_test_set(fixture_a, tmp_path, capsys):
    assert _demo(fixture_a, tmp_path) == 2
    err = capsys.readouterr().err
    assert "freeseg_fixture_a_test" in err and "--vocabulary" in err


def test_missing_weights_say_where_they_go(fixture_a, tmp_path, capsys):
    assert _demo(fixture_a, tmp_path, "--vocabulary", "cat,dog", weights=False) == 2
    err = capsys.readouterr().err
    assert "MODEL.WEIGHTS" in err and "Where weights go" in err
    assert _demo(fixture_a, tmp_path, "--vocabulary", "cat,dog", "MODEL.WEIGHTS", str(tmp_path / "nope.pth"), weights=False) == 2
    assert "nope.pth" in capsys.readouterr().err
    # the backbone a config trains from is no model to run
    assert _demo(fixture_a, tmp_path, "--vocabulary", "cat,dog", "MODEL.WEIGHTS",
                 "detectron2://ImageNetPretrained/torchvision/R-50.pkl", weights=False) == 2
    assert "the ImageNet backbone that the config's training starts from, not a trained model; the demo needs one" in (
        capsys.readouterr().err)


def test_missing_input_and_unknown_task(fixture_a, tmp_path, capsys):
    args = ["--config-file", str(fixture_a / "config.yaml"), "--vocabulary", "cat", "--input"]
    assert run_command("demo", args + [str(tmp_path / "missing.jpg")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_command("demo", args + [str(tmp_path / "*.jpg")]) == 2
    assert "matches no file" in capsys.readouterr().err
    assert _demo(fixture_a, tmp_path, "--vocabulary", "cat", "--task", "instance",
                 "INPUT.TASK_NAME", "['semantic segmentation.']") == 2
    assert "INPUT.TASK_NAME" in capsys.readouterr().err


def test_checkpoint_of_another_model_is_an_error(fixture_a, tmp_path, capsys):
    # one more decoder layer than the checkpoint has
    assert _demo(fixture_a, tmp_path, "--vocabulary", "cat,dog", "MODEL.MASK_FORMER.DEC_LAYERS", "5") == 2
    err = capsys.readouterr().err
    assert "does not match" in err and "--config-file" in err
    assert not (tmp_path / "out").exists()  # nothing written: the error came before any image


def test_checkpoint_without_clip_needs_clip_weights(fixture_a, tmp_path, capsys, monkeypatch):
    state = torch.load(fixture_a / "model_final.pth", weights_only=True, map_location="cpu")["model"]
    stripped = {k: v for k, v in state.items() if not k.startswith("clip_adapter.clip_model.")}
    path = tmp_path / "no_clip.pth"
    torch.save({"model": stripped}, path)
    monkeypatch.delenv("FREESEG_CLIP_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)  # no weights/ViT-B-16.pt here
    assert _demo(fixture_a, tmp_path, "--vocabulary", "cat,dog", "MODEL.WEIGHTS", str(path), weights=False) == 2
    err = capsys.readouterr().err
    assert "ViT-B-16.pt" in err and "CLIP_WEIGHTS" in err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--config-file", "--input", "--output", "--vocabulary", "--task", "--device", "--confidence-threshold"):
        assert flag in text
