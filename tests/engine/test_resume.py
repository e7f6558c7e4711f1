"""Kill-and-resume reproduces the uninterrupted run exactly; bad resumes fail before training."""
from __future__ import annotations

import pytest
import torch

from freeseg.engine import train_net
from freeseg.engine.defaults import seed_all_rng, set_deterministic
from freeseg.engine.train_loop import HookBase
from freeseg.utils.errors import FreeSegError

from .toy import ToyLoader, ToySegmenter, toy_cfg


_BUILD_HOOKS = train_net.build_hooks


class _Crash(RuntimeError):
    pass


class _Record(HookBase):
    def __init__(self, out: dict[int, float], crash_at: int | None = None) -> None:
        self.out, self.crash_at = out, crash_at

    def after_step(self) -> None:
        self.out[self.trainer.iter] = self.trainer.storage.latest()["total_loss"][0]
        if self.trainer.iter == self.crash_at:
            raise _Crash("killed")


def _run(cfg, record, *, resume=False, crash_at=None, monkeypatch):
    monkeypatch.setattr(train_net, "build_hooks",
                        lambda *a, **k: _BUILD_HOOKS(*a, **k) + [_Record(record, crash_at)])
    seed_all_rng(cfg.SEED)  # a fresh process would seed; the model init then differs by design
    model = ToySegmenter()
    return train_net.do_train(cfg, model, resume=resume, data_loader=ToyLoader(), log_period=1)


def test_kill_and_resume_reproduces_losses_exactly(tmp_path, monkeypatch):
    set_deterministic(True)
    try:
        full: dict[int, float] = {}
        _run(toy_cfg(tmp_path / "a", max_iter=20), full, monkeypatch=monkeypatch)

        cfg = toy_cfg(tmp_path / "b", max_iter=20)
        first: dict[int, float] = {}
        with pytest.raises(_Crash):
            _run(cfg, first, crash_at=16, monkeypatch=monkeypatch)  # dies after checkpoint 14
        assert (tmp_path / "b" / "last_checkpoint").read_text() == "model_0000014.pth"
        seed_all_rng(12345)  # the crashed process's random state must not matter
        second: dict[int, float] = {}
        trainer = _run(cfg, second, resume=True, monkeypatch=monkeypatch)
    finally:
        set_deterministic(False)
    assert trainer.start_iter == 15
    assert sorted(second) == list(range(15, 20))
    assert [second[i] for i in range(15, 20)] == [full[i] for i in range(15, 20)]  # bit-exact
    assert [first[i] for i in range(15)] == [full[i] for i in range(15)]
    a = torch.load(tmp_path / "a" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_another_config_is_an_error(tmp_path, monkeypatch):
    _run(toy_cfg(tmp_path, max_iter=5), {}, monkeypatch=monkeypatch)
    other = toy_cfg(tmp_path, max_iter=5, BASE_LR=0.5)
    with pytest.raises(FreeSegError, match=r"another config \(SOLVER.BASE_LR: 0.05 -> 0.5\)") as info:
        _run(other, {}, resume=True, monkeypatch=monkeypatch)
    assert "\n" not in str(info.value)


def test_resume_without_checkpoint_starts_from_weights(tmp_path, monkeypatch):
    cfg = toy_cfg(tmp_path / "run", max_iter=3)
    cfg.MODEL.WEIGHTS = str(tmp_path / "missing.pth")
    with pytest.raises(FreeSegError, match="weights file not found: .*missing.pth"):
        _run(cfg, {}, resume=True, monkeypatch=monkeypatch)
