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


def evaluate_shard(samples: list, progress_dir: str, stop: tuple | None) -> None:
    """Resumable semantic evaluation of this rank's share of ``samples``; ``stop`` = (rank, image
    id): that rank gets SIGINT before that image. Rank 0 writes the metrics to metrics.pt."""
    import signal

    from freeseg.evaluation import SemSegEvaluator, inference_on_dataset
    from freeseg.evaluation.progress import EvaluationProgress

    rank, world = comm.get_rank(), comm.get_world_size()

    class Predictor(torch.nn.Module):
        def forward(self, batch):
            if stop is not None and stop[0] == rank and batch[0]["image_id"] == stop[1]:
                signal.raise_signal(signal.SIGINT)
            return [{"sem_seg": torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i["image_id"]))}
                    for i in batch]

    evaluator = SemSegEvaluator(class_names=["a", "b", "c"], trainable_flag=[1, 1, 0])
    progress = EvaluationProgress(os.path.join(progress_dir, f"eval_progress.rank{rank}.pth"), "settings")
    results = inference_on_dataset(Predictor(), [[s] for s in samples[rank::world]], evaluator, progress)
    if comm.is_main_process():
        torch.save(results, os.path.join(progress_dir, "metrics.pt"))
