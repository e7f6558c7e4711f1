"""tools/convert_freeseg_checkpoint.py: converts, and refuses bad input before writing anything."""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest
import torch

from tests.engine.toy import ToySegmenter

REPO = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("convert_freeseg_checkpoint",
                                                  REPO / "tools" / "convert_freeseg_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def training_checkpoint(tmp_path) -> Path:
    """A detectron2-style training checkpoint: model, optimizer, iteration."""
    model = ToySegmenter()
    path = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict(), "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict(),
                "iteration": 99}, path)
    return path


def test_converts_to_plain_fp32_weights(training_checkpoint, tmp_path, capsys):
    out = tmp_path / "weights.pth"
    assert _tool().main([str(training_checkpoint), str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"model"} and saved["model"].keys() == ToySegmenter().state_dict().keys()
    assert capsys.readouterr().out == f"wrote {len(saved['model'])} tensors to {out}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model_final.pth", "weights.pth"]  # no temporary left


def test_converting_a_checkpoint_onto_itself_is_refused(training_checkpoint, capsys):
    before = training_checkpoint.read_bytes()
    assert _tool().main([str(training_checkpoint), str(training_checkpoint.parent / "." / "model_final.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "is the source checkpoint itself" in err and "give another output file" in err
    assert training_checkpoint.read_bytes() == before  # optimizer and iteration kept


def _bad_sources(tmp_path: Path) -> dict[str, Path]:
    files = {"no_tensors.pth": None, "text.pth": b"not a checkpoint\n", "zero.pth": b"", "text.pkl": b"abc",
             "list.pth": None, "trunc.pth": None}
    torch.save({"foo": 1}, tmp_path / "no_tensors.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    torch.save({"model": ToySegmenter().state_dict()}, tmp_path / "trunc.pth")
    (tmp_path / "trunc.pth").write_bytes((tmp_path / "trunc.pth").read_bytes()[:400])
    for name, data in files.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize("name, message", [
    ("no_tensors.pth", "holds no tensors; give a FreeSeg checkpoint"),
    ("text.pth", "is not a weights file (it is text)"),
    ("zero.pth", "is empty (0 bytes)"),
    ("text.pkl", "is not a weights file (it is text)"),
    ("list.pth", "holds a list, not a state dict"),
    ("trunc.pth", "is truncated or damaged"),
])
def test_bad_source_is_one_line_and_writes_nothing(tmp_path, capsys, name, message):
    src = _bad_sources(tmp_path)[name]
    out = tmp_path / "out" / "weights.pth"
    out.parent.mkdir()
    assert _tool().main([str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {src} ") and message in err and err.count("\n") == 1, err
    assert not any(out.parent.iterdir())


def test_config_typo_fails_before_the_output_is_written(training_checkpoint, tmp_path, capsys):
    out = tmp_path / "weights.pth"
    assert _tool().main([str(training_checkpoint), str(out), "--config", str(tmp_path / "alltsk.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert not out.exists()


def test_model_zoo_pickle_converts(tmp_path):
    arrays = {k: v.numpy() for k, v in ToySegmenter().state_dict().items()}
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": arrays, "__author__": "Caffe2"}, f, protocol=2)
    assert _tool().main([str(tmp_path / "zoo.pkl"), str(tmp_path / "w.pth")]) == 0
    assert torch.load(tmp_path / "w.pth", weights_only=True)["model"].keys() == arrays.keys()
