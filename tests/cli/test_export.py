"""`freeseg export`: the ONNX mask network computes what the model computes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import freeseg
from freeseg.cli.main import run_command
from tests.conftest import load_pt

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[export]')")

NAMES = "cat,dog,grass,sky"


@pytest.fixture(scope="module")
def exported(fixture_a, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "fx.onnx"
    code = run_command("export", [
        "--config-file", str(fixture_a / "config.yaml"), "--output", str(out), "--size", "64", "96",
        "--vocabulary", NAMES, "MODEL.WEIGHTS", str(fixture_a / "model_final.pth"),
        "MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", str(fixture_a / "model_final.pth"),
    ])
    assert code == 0
    cfg = freeseg.get_cfg()
    cfg.merge_from_file(str(fixture_a / "config.yaml"))
    model = freeseg.build_model(cfg)
    freeseg.load_checkpoint(model, str(fixture_a / "model_final.pth"))
    model.eval()
    return out, model


@pytest.mark.slow  # the export (its module fixture) takes about a minute
def test_writes_the_graph_the_text_features_and_the_facts(exported, fixture_a):
    out, model = exported
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["example_size"] == [64, 96] and info["size_multiple"] == 32
    assert info["class_names"] == NAMES.split(",")
    assert info["queries"] == model.sem_seg_head.predictor.num_queries
    texts = np.load(out.with_suffix(".npz"))
    assert sorted(texts.files) == sorted(model.task_names) == sorted(info["tasks"])
    model.set_vocabulary(NAMES.split(","))
    for task in texts.files:
        expected = model.clip_adapter.text_features(NAMES.split(","), task)
        np.testing.assert_allclose(texts[task], expected.detach().numpy(), atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("crop", [(176, 176), (176, 120)], ids=["square", "portrait"])
def test_onnx_outputs_match_the_models_own_predictions(exported, fixture_a, crop):
    """A fixture image (traced at 64x96, run at other sizes), padded with the pixel mean to a
    multiple of 32, through the ONNX file and through OpenVocabulary.predict_tasks, for every
    task and also for a larger vocabulary."""
    out, model = exported
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    image = load_pt(fixture_a / "inputs.pt")["images"][0][:, : crop[0], : crop[1]]  # uint8 [3, h, w]
    padded = model.pixel_mean.expand(3, -(-crop[0] // 32) * 32, -(-crop[1] // 32) * 32).clone()
    padded[:, : crop[0], : crop[1]] = image.float()
    texts = np.load(out.with_suffix(".npz"))
    for names in (NAMES.split(","), NAMES.split(",") + ["tree", "road", "car", "person", "wall"]):
        model.set_vocabulary(names)
        with torch.no_grad():
            tasks = model.predict_tasks([{"image": image}])[0]
        for task, pred in tasks.items():
            text = model.clip_adapter.text_features(names, task).detach()
            if len(names) == 4:
                np.testing.assert_allclose(texts[task], text.numpy(), atol=1e-6, rtol=0)
            logits, masks = session.run(None, {"image": padded[None].numpy(), "text": text.numpy()})
            assert masks.shape[-2:] == (padded.shape[1] // 4, padded.shape[2] // 4)
            assert logits.shape == (1, pred.pred_logits.shape[0], len(names) + 1)
            np.testing.assert_allclose(logits[0], pred.pred_logits.numpy(), atol=5e-3, rtol=0)
            np.testing.assert_allclose(masks[0], pred.pred_masks.numpy(), atol=1e-3, rtol=0)


def test_without_onnx_the_command_says_what_to_install(fixture_a, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert run_command("export", ["--config-file", str(fixture_a / "config.yaml"), "--output", str(tmp_path / "a.onnx")]) == 2
    assert "freeseg export needs onnxscript: pip install -e '.[export]'" in capsys.readouterr().err


def test_bad_sizes_and_outputs_are_errors(fixture_a, tmp_path, capsys):
    base = ["--config-file", str(fixture_a / "config.yaml"), "--vocabulary", NAMES,
            "MODEL.WEIGHTS", str(fixture_a / "model_final.pth")]
    assert run_command("export", ["--output", str(tmp_path / "a.onnx"), "--size", "60", "96", *base]) == 2
    assert "--size 60 96: both must be positive multiples of 32 up to 4096" in capsys.readouterr().err
    assert run_command("export", ["--output", str(tmp_path / "a.pt"), *base]) == 2
    assert "ending in .onnx" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
