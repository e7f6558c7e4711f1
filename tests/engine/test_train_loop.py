"""The trainer on a toy model: learning, logging, AMP, non-finite losses, signals."""
from __future__ import annotations

import glob
import json
import os
import signal

import pytest
import torch

from freeseg.engine.defaults import seed_all_rng
from freeseg.engine.hooks import PeriodicCheckpointer
from freeseg.engine.train_loop import HookBase, NonFiniteLossError
from freeseg.engine.train_net import do_train
from freeseg.utils.errors import FreeSegError

from .toy import ToyLoader, ToySegmenter, toy_cfg


def _train(cfg, model=None, **kw):
    seed_all_rng(cfg.SEED)
    model = model or ToySegmenter()
    return do_train(cfg, model, data_loader=ToyLoader(), log_period=kw.pop("log_period", 1), **kw)


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_toy_trains_30_iterations_and_loss_goes_down(tmp_path, caplog):
    caplog.set_level("INFO", logger="freeseg.engine")
    trainer = _train(toy_cfg(tmp_path))
    losses = trainer.storage.history("loss_ce")
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    rows = _metrics(tmp_path)
    assert [r["iteration"] for r in rows] == list(range(30))
    for key in ("total_loss", "loss_ce", "loss_reg", "lr", "time", "data_time", "eta_seconds"):
        assert key in rows[-1], key
    assert rows[0]["lr"] == pytest.approx(0.05)
    assert rows[-1]["lr"] < rows[0]["lr"]
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
    progress = [r.getMessage() for r in caplog.records if "iter: 30/30" in r.getMessage()]
    assert len(progress) == 1
    for part in ("eta: 0:00:00", "total_loss: ", "loss_ce: ", "time: ", "data_time: ", "lr: "):
        assert part in progress[0], part
    assert (tmp_path / "model_final.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(p.name for p in tmp_path.glob("model_*.pth")) == [
        "model_0000004.pth", "model_0000009.pth", "model_0000014.pth", "model_0000019.pth",
        "model_0000024.pth", "model_final.pth"]


def test_bf16_amp_smoke(tmp_path):
    trainer = _train(toy_cfg(tmp_path, max_iter=3, **{"AMP.ENABLED": True, "AMP.DTYPE": "bfloat16"}))
    assert trainer.scaler is None
    assert all(torch.isfinite(torch.tensor(trainer.storage.history("total_loss"))))


def test_fp16_amp_uses_a_grad_scaler(tmp_path):
    trainer = _train(toy_cfg(tmp_path, max_iter=2, **{"AMP.ENABLED": True, "AMP.DTYPE": "float16"}))
    assert trainer.scaler is not None and trainer.scaler.is_enabled()
    assert "scaler" in torch.load(tmp_path / "model_final.pth", weights_only=True)


def test_nonfinite_loss_stops_with_iteration_and_terms(tmp_path):
    model = ToySegmenter()

    class Poison(HookBase):
        def after_step(self):
            if self.trainer.iter == 6:
                model.force_nan = True

    cfg = toy_cfg(tmp_path, max_iter=20)
    seed_all_rng(cfg.SEED)
    good = None
    with pytest.raises(NonFiniteLossError, match=r"iteration 7 \(loss_ce=nan\): lower SOLVER.BASE_LR .*; the last "
                                                 r"checkpoint, .*model_0000004.pth, is intact: rerun with --resume"):
        from freeseg.engine import train_net

        orig = train_net.build_hooks
        train_net.build_hooks = lambda *a, **k: orig(*a, **k) + [Poison()]
        try:
            do_train(cfg, model, data_loader=ToyLoader(), log_period=1)
        finally:
            train_net.build_hooks = orig
    good = torch.load(tmp_path / "model_0000004.pth", weights_only=True)
    assert good["iteration"] == 4
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert not (tmp_path / "model_final.pth").exists()
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


def test_nonfinite_loss_before_any_checkpoint_says_there_is_none(tmp_path):
    model = ToySegmenter()
    model.force_nan = True
    with pytest.raises(NonFiniteLossError, match=r"iteration 0 \(loss_ce=nan\): .*; no checkpoint was saved before "
                                                 r"it: rerun from the start$") as info:
        _train(toy_cfg(tmp_path, max_iter=20), model=model)
    assert "intact" not in str(info.value)


def test_nonfinite_loss_skip_counts(tmp_path):
    model = ToySegmenter()
    model.force_nan = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _train(toy_cfg(tmp_path, max_iter=4, NONFINITE_LOSS="skip"), model=model)
    assert trainer.nonfinite_skips == 4
    assert _metrics(tmp_path)[-1]["nonfinite_skips"] == 4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no update


def test_sigterm_saves_and_stops(tmp_path):
    class Kill(HookBase):
        def after_step(self):
            if self.trainer.iter == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    from freeseg.engine import train_net

    orig = train_net.build_hooks
    train_net.build_hooks = lambda *a, **k: orig(*a, **k) + [Kill()]
    try:
        trainer = _train(toy_cfg(tmp_path, max_iter=30, CHECKPOINT_PERIOD=100))
    finally:
        train_net.build_hooks = orig
    assert trainer.stopped_early and trainer.stop_requested == "SIGTERM"
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert torch.load(tmp_path / "model_0000003.pth", weights_only=True)["iteration"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_model_must_return_a_loss_dict(tmp_path):
    class Bad(ToySegmenter):
        def forward(self, batch):
            return super().forward(batch)["loss_ce"]

    with pytest.raises(FreeSegError, match="dict of losses"):
        _train(toy_cfg(tmp_path, max_iter=2), model=Bad())


def test_wandb_requested_but_not_installed_is_a_warning(tmp_path, caplog, monkeypatch):
    import builtins

    from freeseg.utils.events import JSONWriter, default_writers

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    writers = default_writers(str(tmp_path), 10, {"project": "p", "name": None, "config": {}})
    assert len(writers) == 3 and any(isinstance(w, JSONWriter) for w in writers)
    assert "wandb is not installed" in caplog.text
    for w in writers:
        w.close()


def test_periodic_and_final_evaluation_are_logged(tmp_path):
    calls = []

    def eval_fn():
        calls.append(len(calls))
        return {"sem_seg": {"mIoU": 10.0 * len(calls)}, "note": "text is not a metric"}

    cfg = toy_cfg(tmp_path, max_iter=6)
    cfg.TEST.EVAL_PERIOD = 2
    _train(cfg, eval_fn=eval_fn)
    assert len(calls) == 3  # after iterations 1 and 3, then the final one after 5
    evals = [(r["iteration"], r["sem_seg/mIoU"]) for r in _metrics(tmp_path) if "sem_seg/mIoU" in r]
    assert evals == [(1, 10.0), (3, 20.0), (5, 30.0)]


def test_do_test_sets_each_test_vocabulary_and_restores_training_one(tmp_path, monkeypatch):
    import freeseg.data.loaders as loaders
    import freeseg.evaluation as evaluation
    from freeseg.data.catalog import MetadataCatalog
    from freeseg.engine.train_net import do_test

    name = "engine_test_vocab_set"
    MetadataCatalog.get(name).set(stuff_classes=["cat", "sky"], thing_classes=["cat"], trainable_flag=[1, 0])

    class Model(torch.nn.Module):
        vocabulary = ("train", "names")

        def set_vocabulary(self, class_names, trainable_flag=None, thing_flags=None):
            self.vocabulary = (class_names, trainable_flag, thing_flags)

    seen = []
    monkeypatch.setattr(loaders, "build_test_loader", lambda cfg, n: [n])
    monkeypatch.setattr(evaluation, "build_evaluator", lambda cfg, n, out: n)
    monkeypatch.setattr(evaluation, "inference_on_dataset", lambda m, loader, ev, progress=None: seen.append(m.vocabulary) or {"x": {}})
    cfg = toy_cfg(tmp_path)
    cfg.DATASETS.TEST = (name,)
    model = Model()
    try:
        assert do_test(cfg, model) == {"x": {}}
    finally:
        MetadataCatalog.remove(name)
    assert seen == [(["cat", "sky"], [1, 0], [1, 0])]
    assert model.vocabulary == ("train", "names")


@pytest.mark.slow
def test_torch_compile_trains_and_matches_eager(tmp_path):
    eager = _train(toy_cfg(tmp_path / "eager", max_iter=3))
    compiled = _train(toy_cfg(tmp_path / "compiled", max_iter=3, COMPILE=True))
    assert compiled.model is not compiled.model._orig_mod  # really wrapped by torch.compile
    torch.testing.assert_close(torch.tensor(compiled.storage.history("total_loss")),
                               torch.tensor(eager.storage.history("total_loss")), rtol=1e-4, atol=1e-5)
    assert (tmp_path / "compiled" / "model_final.pth").exists()
