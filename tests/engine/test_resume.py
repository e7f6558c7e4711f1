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


def test_resume_without_pointer_continues_from_the_newest_checkpoint(tmp_path, monkeypatch):
    """A lost ``last_checkpoint`` file must not restart at iteration 0 and overwrite the run."""
    cfg = toy_cfg(tmp_path, max_iter=12, CHECKPOINT_PERIOD=4)
    with pytest.raises(_Crash):
        _run(cfg, {}, crash_at=9, monkeypatch=monkeypatch)  # checkpoints after iterations 3 and 7
    (tmp_path / "last_checkpoint").unlink()
    trainer = _run(cfg, {}, resume=True, monkeypatch=monkeypatch)
    assert trainer.start_iter == 8


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_resume_from_a_damaged_checkpoint_names_the_older_one(tmp_path, monkeypatch, damage):
    cfg = toy_cfg(tmp_path, max_iter=12, CHECKPOINT_PERIOD=4)
    with pytest.raises(_Crash):
        _run(cfg, {}, crash_at=9, monkeypatch=monkeypatch)
    last = tmp_path / "model_0000007.pth"
    last.write_bytes(b"" if damage == "empty" else last.read_bytes()[:500])
    problem = "is empty (0 bytes)" if damage == "empty" else "is truncated or damaged (RuntimeError: "
    with pytest.raises(FreeSegError) as info:
        _run(cfg, {}, resume=True, monkeypatch=monkeypatch)
    message = str(info.value)
    assert message.startswith(f"--resume: {last} {problem}") and "\n" not in message
    assert message.endswith(f"; an older checkpoint is there: delete {last} and {tmp_path}/last_checkpoint, then "
                            f"rerun with --resume to continue from {tmp_path}/model_0000003.pth")
    (tmp_path / "model_0000003.pth").unlink()
    with pytest.raises(FreeSegError, match=r"; no older checkpoint is in .*: restore the file, or start over"):
        _run(cfg, {}, resume=True, monkeypatch=monkeypatch)
    last.unlink()
    (tmp_path / "last_checkpoint").unlink()  # as the first error advised: trains from the start
    assert _run(cfg, {}, resume=True, monkeypatch=monkeypatch).start_iter == 0


def _cli_args(out, *opts, resume=False, eval_only=False):
    import argparse

    return argparse.Namespace(config_file="", resume=resume, eval_only=eval_only, num_gpus=1, num_machines=1,
                              machine_rank=0, dist_url="auto",
                              opts=["OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2", *opts])


def test_training_again_without_resume_is_refused_before_any_work(tmp_path, monkeypatch):
    cfg = toy_cfg(tmp_path, max_iter=12, CHECKPOINT_PERIOD=4)
    with pytest.raises(_Crash):
        _run(cfg, {}, crash_at=9, monkeypatch=monkeypatch)
    (tmp_path / "config.yaml").write_text("the run's own config")
    with pytest.raises(FreeSegError, match=rf"^OUTPUT_DIR {tmp_path} already holds a run up to iteration 7 "
                                           r"\(model_0000007.pth\); pass --resume to continue it, or pick another "
                                           r"OUTPUT_DIR \(or delete that folder\) to start over$"):
        train_net.setup(_cli_args(tmp_path))
    assert (tmp_path / "config.yaml").read_text() == "the run's own config"  # nothing written
    train_net.setup(_cli_args(tmp_path, resume=True))  # continuing, or evaluating, is fine
    train_net.setup(_cli_args(tmp_path, eval_only=True))
    for name in ("model_0000003.pth", "model_0000007.pth"):
        (tmp_path / name).unlink()
    with pytest.raises(FreeSegError, match="already holds a last_checkpoint file"):
        train_net.setup(_cli_args(tmp_path))
    train_net.setup(_cli_args(tmp_path / "new"))
    train_net.refuse_to_overwrite(str(tmp_path / "absent"))
    (tmp_path / "model_final.pth").write_bytes(b"x")
    with pytest.raises(FreeSegError, match=r"already holds a finished run \(model_final.pth\)"):
        train_net.refuse_to_overwrite(str(tmp_path))
