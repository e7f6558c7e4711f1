"""Two CPU processes (gloo) spawned by launch(): DDP keeps them in step; bad layouts fail early."""
from __future__ import annotations

import argparse

import pytest
import torch

from freeseg.engine.launch import launch
from freeseg.engine.train_net import run
from freeseg.utils.errors import FreeSegError

from . import dist_worker


def test_two_process_gloo_training(tmp_path):
    launch(dist_worker.train_toy, 2, dist_url="auto", args=(str(tmp_path),), backend="gloo")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert (r0["backend"], r0["world"], r1["local_rank"]) == ("gloo", 2, 1)
    # Ranks start from different random inits (SEED + rank); DDP's broadcast and gradient
    # all-reduce must leave every tensor (frozen ones too) identical.
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 4  # averaged over ranks
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert len(final["rng"]) == 2 and final["world_size"] == 2
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "log.txt.rank1").stat().st_size > 0


def _args(**kw):
    base = dict(config_file="", opts=[], eval_only=False, resume=False, num_gpus=2,
                num_machines=1, machine_rank=0, dist_url="auto")
    base.update(kw)
    return argparse.Namespace(**base)


def test_batch_not_divisible_by_world_size_fails_before_spawning(tmp_path, monkeypatch):
    args = _args(opts=["SOLVER.IMS_PER_BATCH", "3", "OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu"])
    monkeypatch.setattr("freeseg.engine.train_net.launch", lambda *a, **k: pytest.fail("spawned"))
    with pytest.raises(FreeSegError, match=r"SOLVER.IMS_PER_BATCH=3 does not divide among 2 processes"):
        run(args)
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun: the world comes from the environment
    with pytest.raises(FreeSegError, match="among 4 processes"):
        run(_args(num_gpus=1, opts=["SOLVER.IMS_PER_BATCH", "6"]))


def test_error_in_a_worker_surfaces_as_one_line():
    with pytest.raises(FreeSegError, match=r"^rank 1: DATASETS.TRAIN names an unknown data set; register it$"):
        launch(dist_worker.fail_on_rank1, 2, dist_url="auto", backend="gloo")


def test_signal_stop_in_the_workers_keeps_its_exit_status():
    """Ctrl-C'd training exits 130 with --num-gpus 2 as with one process (`train && eval`)."""
    with pytest.raises(FreeSegError, match=r"^rank \d: stopped by SIGINT after iteration 5; rerun with --resume") as e:
        launch(dist_worker.stopped_by_signal, 2, dist_url="auto", backend="gloo")
    assert e.value.exit_status == 130


def test_two_process_evaluation_stopped_on_one_rank_continues_with_the_same_metrics(tmp_path):
    """Each rank saves its own share; the continued run's gathered metrics equal one process's."""
    import numpy as np
    from PIL import Image

    samples = []
    for i in range(8):
        gt = np.random.default_rng(i).integers(0, 3, size=(8, 8)).astype(np.uint8)
        Image.fromarray(gt).save(tmp_path / f"gt{i}.png")
        samples.append({"file_name": f"img{i}.jpg", "sem_seg_file_name": str(tmp_path / f"gt{i}.png"), "image_id": i})
    single = tmp_path / "single"
    single.mkdir()
    launch(dist_worker.evaluate_shard, 1, args=(samples, str(single), None))

    two = tmp_path / "two"
    two.mkdir()
    with pytest.raises(FreeSegError, match=r"^rank 1: evaluation stopped by SIGINT: 2 of 4 images") as e:
        launch(dist_worker.evaluate_shard, 2, dist_url="auto", args=(samples, str(two), (1, 5)), backend="gloo")
    assert e.value.exit_status == 130 and (two / "eval_progress.rank1.pth").is_file()
    launch(dist_worker.evaluate_shard, 2, dist_url="auto", args=(samples, str(two), None), backend="gloo")
    assert torch.load(two / "metrics.pt", weights_only=False) == torch.load(single / "metrics.pt", weights_only=False)
    assert not list(two.glob("eval_progress.*"))


def test_bad_machine_layout():
    with pytest.raises(FreeSegError, match="--dist-url auto works on one machine only"):
        launch(print, 2, num_machines=2, machine_rank=0, dist_url="auto", backend="gloo")


@pytest.mark.parametrize("url", ["foo://bar", "tcp://host", "tcp://:1234", "tcp://host:port", "127.0.0.1:1234"])
def test_bad_dist_url_fails_before_spawning(url, monkeypatch):
    monkeypatch.setattr("torch.multiprocessing.start_processes", lambda *a, **k: pytest.fail("spawned"))
    with pytest.raises(FreeSegError, match=rf"^--dist-url {url} is not a rendezvous address; use tcp://"):
        launch(print, 2, dist_url=url, backend="gloo")


def test_multi_machine_launch_says_what_it_waits_for(monkeypatch, capsys):
    monkeypatch.setattr("torch.multiprocessing.start_processes", lambda *a, **k: None)
    launch(print, 2, num_machines=3, machine_rank=0, dist_url="tcp://10.0.0.1:29500", backend="gloo")
    assert capsys.readouterr().err == (
        "machine 0 of 3: waiting at tcp://10.0.0.1:29500 for all 6 processes (2 per machine) to join\n")
