"""num_masks is averaged over processes (two gloo processes on CPU)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from freeseg.losses import SetCriterion


def _worker(rank: int, init_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        # rank 0 has 3 target masks, rank 1 has 0: average 1.5 on both.
        targets = [{"labels": torch.arange(3 if rank == 0 else 0)}]
        value = SetCriterion.num_masks(targets, torch.device("cpu"))
        torch.save(value, f"{result_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_num_masks_all_reduced_over_ranks(tmp_path):
    init_file, result = str(tmp_path / "init"), str(tmp_path / "num_masks")
    mp.start_processes(_worker, args=(init_file, result), nprocs=2, start_method="spawn")
    assert [torch.load(f"{result}.{r}") for r in range(2)] == [1.5, 1.5]
