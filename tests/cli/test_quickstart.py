"""The quickstart chain, shortened: every stage runs through the real commands and leaves its
outputs (world, tiny CLIP, stage-1 and stage-2 checkpoints, results with the control, pictures)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from freeseg.cli.quickstart_eval import format_table, shuffled_unseen


def test_shuffled_unseen_is_a_derangement_of_unseen_names_only():
    names, flags = ["a", "b", "c", "d", "e"], [1, 0, 1, 0, 0]
    out = shuffled_unseen(names, flags)
    assert [out[i] for i in (0, 2)] == ["a", "c"]
    assert sorted(out[i] for i in (1, 3, 4)) == ["b", "d", "e"]
    assert all(out[i] != names[i] for i in (1, 3, 4))


@pytest.mark.slow
def test_short_quickstart_chain_runs_every_stage(tmp_path):
    out, data, weights = tmp_path / "out", tmp_path / "datasets", tmp_path / "weights"
    cmd = [sys.executable, "-m", "freeseg", "quickstart", "--short", "--output", str(out),
           "--datasets", str(data), "--weights", str(weights)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    world = data / "freeseg_world"
    assert (world / "panoptic_detectron2" / "panoptic_train2017_base.json").exists()
    assert (weights / "tiny_clip.pt").exists() and (weights / "tiny_clip.json").exists()
    assert (out / "stage1" / "model_final.pth").exists() and (out / "stage2" / "model_final.pth").exists()
    assert (out / "stage2" / "metrics.json").exists()
    results = json.loads((out / "results.json").read_text())
    for run in ("model", "control"):
        assert {"sem_seg", "panoptic_seg", "segm"} <= set(results[run])
        assert 0 <= results[run]["sem_seg"]["mIoU-unbase"] <= 100
    pictures = (out / "demo" / "index.txt").read_text().split()
    assert pictures and all((out / "demo" / p).exists() for p in pictures)
    assert format_table(results).splitlines()[0] in done.stdout
    # a second run finds every step's output and redoes none of them
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for step in ("data", "clip", "stage1", "stage2", "eval", "demo"):
        assert f"{step}: already done" in again.stderr
    assert "Step times" not in again.stdout and format_table(results).splitlines()[0] in again.stdout
    # a second run resumes: every step is already done, nothing is recomputed
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("already done") == 0
    assert again.stderr.count("already done") == 6
    # --fresh redoes a training stage although its folder holds a finished run (training alone
    # would refuse to overwrite it)
    stamp = (out / "stage1" / "model_final.pth").stat().st_mtime_ns
    fresh = subprocess.run(cmd + ["--only", "stage1", "--fresh"], capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert (out / "stage1" / "model_final.pth").stat().st_mtime_ns > stamp
