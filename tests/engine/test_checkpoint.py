"""Checkpoints: atomic writes, pointer, RNG round trip, and load_checkpoint's formats/errors."""
from __future__ import annotations

import io
import os
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

import freeseg
from freeseg.engine import checkpoint as ckpt_mod
from freeseg.engine.checkpoint import Checkpointer, atomic_save, get_rng_state, set_rng_state
from freeseg.utils.errors import FreeSegError

from .toy import ToySegmenter


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    atomic_save({"x": torch.ones(2)}, str(path))

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"x": torch.zeros(2)}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]  # no temporary left behind


def test_rng_state_round_trip():
    state = get_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(3)
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_checkpointer_pointer_and_our_format_loads(tmp_path):
    model = ToySegmenter()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = Checkpointer(model, str(tmp_path), optimizer=opt, fingerprint={"MODEL.X": "1"})
    assert ck.last_checkpoint() is None
    path = ck.save("model_0000009", iteration=9)
    assert ck.last_checkpoint() == path
    data = torch.load(path, weights_only=True)  # loadable without unpickling code
    assert data["iteration"] == 9 and data["config"] == {"MODEL.X": "1"} and len(data["rng"]) == 1
    fresh = ToySegmenter()
    missing, unexpected = freeseg.load_checkpoint(fresh, path)
    assert (missing, unexpected) == ([], [])
    assert _equal(fresh, model)


def test_pointer_to_a_missing_file_is_an_error(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000004.pth")
    with pytest.raises(FreeSegError, match=r"model_0000004.pth, which does not exist; restore that file, or "
                                           r"delete .*last_checkpoint to start over \(no checkpoint is in"):
        Checkpointer(ToySegmenter(), str(tmp_path)).last_checkpoint()
    _save_at(tmp_path, "model_0000001", 0)
    (tmp_path / "last_checkpoint").write_text("model_0000004.pth")
    # deleting the pointer, as advised, resumes from the newest checkpoint: the advice names it
    with pytest.raises(FreeSegError, match=r"delete .*last_checkpoint and rerun with --resume to continue from "
                                           r"the newest checkpoint there, model_0000001.pth$"):
        Checkpointer(ToySegmenter(), str(tmp_path)).last_checkpoint()


def test_empty_pointer_says_so(tmp_path):
    _save_at(tmp_path, "model_0000009", 0)
    (tmp_path / "last_checkpoint").write_text("")
    with pytest.raises(FreeSegError, match=r"last_checkpoint is empty instead of naming a checkpoint; delete .* "
                                           r"continue from the newest checkpoint there, model_0000009.pth$"):
        Checkpointer(ToySegmenter(), str(tmp_path)).last_checkpoint()


def _save_at(folder, name: str, mtime: float) -> str:
    """A checkpoint ``name`` in ``folder`` with its modification time set to ``mtime``."""
    path = Checkpointer(ToySegmenter(), str(folder)).save(name, iteration=int(name[6:]) if name[6:].isdigit() else 9)
    os.utime(path, (mtime, mtime))
    return path


def test_no_pointer_resumes_from_the_newest_checkpoint(tmp_path, caplog):
    _save_at(tmp_path, "model_0000004", 1000)
    newest = _save_at(tmp_path, "model_0000009", 3000)
    _save_at(tmp_path, "model_final", 2000)  # an older run's end, then resumed with a larger MAX_ITER
    (tmp_path / "model_backup.pth").write_bytes(b"")  # not one of ours
    (tmp_path / "last_checkpoint").unlink()
    with caplog.at_level("WARNING", logger="freeseg.engine.checkpoint"):
        assert Checkpointer(ToySegmenter(), str(tmp_path)).last_checkpoint() == newest
    assert "no last_checkpoint file: using the newest checkpoint there, model_0000009.pth" in caplog.text
    assert Checkpointer(ToySegmenter(), str(tmp_path / "absent")).last_checkpoint() is None


def test_detectron2_pth_with_ddp_prefix(tmp_path):
    src = ToySegmenter()
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"model": state, "iteration": 5, "__author__": "detectron2"}, tmp_path / "d2.pth")
    model = ToySegmenter()
    assert freeseg.load_checkpoint(model, str(tmp_path / "d2.pth")) == ([], [])
    assert _equal(model, src)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_model_zoo_pickle_with_numpy_arrays(tmp_path, protocol):
    src = ToySegmenter()
    arrays = {k: v.numpy() for k, v in src.state_dict().items()}
    del arrays["head.1.bias"]
    arrays["extra.weight"] = np.zeros(3, dtype=np.float32)
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": arrays, "__author__": "Caffe2", "matching_heuristics": True}, f, protocol=protocol)
    model = ToySegmenter()
    missing, unexpected = freeseg.load_checkpoint(model, str(tmp_path / "zoo.pkl"))
    assert (missing, unexpected) == (["head.1.bias"], ["extra.weight"])
    assert torch.equal(model.backbone[0].weight, src.backbone[0].weight)


def test_pickle_with_code_is_refused(tmp_path):
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"w": random.Random()}}, f)
    with pytest.raises(FreeSegError, match="only numpy arrays are allowed"):
        freeseg.load_checkpoint(ToySegmenter(), str(tmp_path / "evil.pkl"))


def test_safetensors_state_dict(tmp_path):
    from safetensors.torch import save_file

    src = ToySegmenter()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "m.safetensors"))
    model = ToySegmenter()
    assert freeseg.load_checkpoint(model, str(tmp_path / "m.safetensors")) == ([], [])
    assert _equal(model, src)


def test_torchvision_backbone_is_converted_and_prefixed(tmp_path):
    import torchvision

    from freeseg.config import get_cfg
    from freeseg.modeling.backbone.resnet import build_resnet_backbone

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = build_resnet_backbone(cfg)
            self.head = nn.Conv2d(512, 2, 1)

    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    net = Net()
    missing, unexpected = freeseg.load_checkpoint(net, str(tmp_path / "resnet18.pth"))
    assert unexpected == []
    assert all(k.startswith("head.") for k in missing)
    assert torch.equal(net.backbone.stem.conv1.weight, tv.conv1.weight)
    assert torch.equal(net.backbone.res5[1].conv2.weight, tv.layer4[1].conv2.weight)


def test_detectron2_url_maps_to_local_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FREESEG_WEIGHTS", str(tmp_path / "w"))
    with pytest.raises(FreeSegError, match=r"put the file at .*w/DeepLab/R-103.pkl") as info:
        freeseg.load_checkpoint(ToySegmenter(), "detectron2://DeepLab/R-103.pkl")
    assert "\n" not in str(info.value)
    (tmp_path / "w" / "ImageNetPretrained" / "torchvision").mkdir(parents=True)
    src = ToySegmenter()
    torch.save({"model": src.state_dict()}, tmp_path / "w" / "ImageNetPretrained" / "torchvision" / "R-50.pkl.pth")
    url = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/torchvision/R-50.pkl.pth"
    model = ToySegmenter()
    assert freeseg.load_checkpoint(model, url) == ([], [])
    assert _equal(model, src)


def test_missing_local_file_names_the_key(tmp_path):
    with pytest.raises(FreeSegError, match="weights file not found: .*nope.pth; check MODEL.WEIGHTS"):
        freeseg.load_checkpoint(ToySegmenter(), str(tmp_path / "nope.pth"))


def test_shape_mismatch_lists_the_keys(tmp_path):
    torch.save({"model": ToySegmenter(num_classes=5).state_dict()}, tmp_path / "k5.pth")
    with pytest.raises(FreeSegError, match=r"head.1.weight \(5, 8, 1, 1\) vs model \(3, 8, 1, 1\)"):
        freeseg.load_checkpoint(ToySegmenter(num_classes=3), str(tmp_path / "k5.pth"))


def test_prepare_for_state_dict_hook_can_rebuild_a_submodule(tmp_path):
    class Resizable(nn.Module):
        def __init__(self, n: int):
            super().__init__()
            self.proj = nn.Linear(4, n)
            self.seen: list[str] = []

        def prepare_for_state_dict(self, state):
            self.seen = sorted(state)  # keys relative to this module
            self.proj = nn.Linear(4, state["proj.weight"].shape[0])

    class Net(nn.Module):
        def __init__(self, n: int):
            super().__init__()
            self.adapter = Resizable(n)
            self.other = nn.Linear(2, 2)

    torch.save({"model": Net(7).state_dict()}, tmp_path / "n7.pth")
    net = Net(3)
    assert freeseg.load_checkpoint(net, str(tmp_path / "n7.pth")) == ([], [])
    assert net.adapter.seen == ["proj.bias", "proj.weight"]
    assert net.adapter.proj.out_features == 7


def _damaged_files(folder) -> dict[str, bytes]:
    """File name -> contents of weights files that cannot be read, as users end up with them."""
    buf = io.BytesIO()
    torch.save({"model": ToySegmenter().state_dict()}, buf)
    good_pth = buf.getvalue()
    good_pkl = pickle.dumps({"model": {k: v.numpy() for k, v in ToySegmenter().state_dict().items()}}, protocol=2)
    return {
        "zero.pth": b"", "zero.pkl": b"", "zero.safetensors": b"",
        "trunc.pth": good_pth[: len(good_pth) // 2], "trunc.pkl": good_pkl[: len(good_pkl) // 2],
        "text.pth": b"not a checkpoint\n", "text.pkl": b"abc", "image.pth": b"\x89PNG\r\n\x1a\n" + bytes(40),
        "random.safetensors": bytes(range(7, 107)),
    }


@pytest.mark.parametrize("name", sorted(_damaged_files(".")))
def test_damaged_or_foreign_weights_file_is_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(_damaged_files(tmp_path)[name])
    with pytest.raises(FreeSegError) as info:
        freeseg.load_checkpoint(ToySegmenter(), str(path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    if name.startswith("zero"):
        assert "is empty (0 bytes); copy or download it again" in message
    elif name.startswith("trunc"):
        assert "is truncated or damaged (" in message and "copy or download it again" in message
    else:  # not PyTorch's advice to load it with weights_only=False
        assert "is not a weights file (it is " in message or "first bytes are no PyTorch" in message
        assert "weights_only" not in message
    assert "text" not in name or "(it is text)" in message
    assert "image" not in name or "(it is a PNG image)" in message


def test_checkpoint_with_python_objects_names_the_class(tmp_path):
    import argparse

    torch.save({"model": ToySegmenter().state_dict(), "args": argparse.Namespace(lr=1)}, tmp_path / "full.pth")
    with pytest.raises(FreeSegError, match=r"holds objects other than tensors and builtins \(argparse.Namespace\) "
                                           r"and was not loaded \(weights_only\); re-save its state dict") as info:
        freeseg.load_checkpoint(ToySegmenter(), str(tmp_path / "full.pth"))
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)


def test_trained_weights_must_fill_the_model(tmp_path):
    """Evaluation and the demo refuse what training from MODEL.WEIGHTS accepts with a warning."""
    from freeseg.engine.weights import load_trained_weights

    state = ToySegmenter().state_dict()
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("head.")}}, tmp_path / "part.pth")
    with pytest.raises(FreeSegError, match=r"^checkpoint .*part.pth does not match config a.yaml: 2 model tensors "
                                           r"missing, 0 unexpected \(e.g. head.1.weight\); pass the --config-file"):
        load_trained_weights(ToySegmenter(), str(tmp_path / "part.pth"), clip_file="x.pt", clip_name="ViT-B/16",
                             config_file="a.yaml")
    # an ImageNet initialisation (say the R-103.pkl that FreeSeg's configs train from) gets its own words
    torch.save({"model": {k: v for k, v in state.items() if k.startswith("backbone.")}}, tmp_path / "bb.pth")
    with pytest.raises(FreeSegError, match=r"^.*bb.pth holds a backbone's weights only \(what training starts from\), "
                                           r"not a trained model; add 'MODEL.WEIGHTS path/to/model_final.pth'"):
        load_trained_weights(ToySegmenter(), str(tmp_path / "bb.pth"), clip_file="x.pt", clip_name="ViT-B/16")
    torch.save({"model": {**state, "extra.weight": torch.zeros(1)}}, tmp_path / "more.pth")
    with pytest.raises(FreeSegError, match=r"0 model tensors missing, 1 unexpected \(e.g. extra.weight\)"):
        load_trained_weights(ToySegmenter(), str(tmp_path / "more.pth"), clip_file="x.pt", clip_name="ViT-B/16")
    torch.save({"model": state}, tmp_path / "full.pth")
    load_trained_weights(ToySegmenter(), str(tmp_path / "full.pth"), clip_file="", clip_name="ViT-B/16")
