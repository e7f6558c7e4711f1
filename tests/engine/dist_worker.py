"""Functions run in spawned processes by test_distributed.py (importable, not a test module)."""
from __future__ import annotations

import os

import torch

from freeseg.engine.defaults import default_setup, per_rank_batch_size
from freeseg.engine.train_net import do_train
from freeseg.utils import comm

from .toy import ToyLoader, ToySegmenter, toy_cfg


def train_toy(out_dir: str) -> None:
    cfg = toy_cfg(out_dir, max_iter=4, IMS_PER_BATCH=4, CHECKPOINT_PERIOD=2)
    default_setup(cfg)
    rank = comm.get_rank()
    batch = per_rank_batch_size(cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size())
    model = ToySegmenter()  # seeded SEED + rank: different on each rank until DDP syncs it
    trainer = do_train(cfg, model, data_loader=ToyLoader(batch_size=batch, rank=rank), log_period=1)
    torch.save({"state": model.state_dict(), "backend": torch.distributed.get_backend(),
                "world": comm.get_world_size(), "losses": trainer.storage.history("total_loss"),
                "local_rank": comm.get_local_rank()},
               os.path.join(out_dir, f"rank{rank}.pt"))


def fail_on_rank1() -> None:
    from freeseg.utils.errors import FreeSegError

    if comm.get_rank() == 1:
        raise FreeSegError("DATASETS.TRAIN names an unknown data set; register it")
    comm.synchronize()  # rank 0 waits here until the failure ends the job


def stopped_by_signal() -> None:
    """Every rank ends as a Ctrl-C'd training does (train_net.main after saving)."""
    from freeseg.engine.train_loop import TrainingStopped

    comm.synchronize()
    raise TrainingStopped("SIGINT", 5)
