"""freeseg.utils.comm: object gathers' group, and tearing the groups down."""
from __future__ import annotations

import torch.distributed as dist

from freeseg.utils import comm


def test_one_process_helpers_need_no_group():
    assert not comm.is_dist()
    assert (comm.get_rank(), comm.get_world_size()) == (0, 1)
    assert comm.gather({"a": 1}) == [{"a": 1}] and comm.all_gather(3) == [3]
    comm.synchronize()
    comm.destroy()  # nothing to destroy: a no-op


def test_nccl_runs_gather_over_one_gloo_group_until_destroyed(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(dist, "new_group", lambda backend: made.append(backend) or f"gloo group {len(made)}")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        assert comm._cpu_group() is None  # a gloo default group gathers over itself
        monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
        assert comm._cpu_group() == comm._cpu_group() == "gloo group 1"
        assert made == ["gloo"]
    finally:
        comm.destroy()
    assert not dist.is_initialized() and comm._GLOO_GROUPS == {}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init2'}", rank=0, world_size=1)
    try:  # a new default group gets its own gloo group
        assert comm._cpu_group() == "gloo group 2"
    finally:
        comm.destroy()
