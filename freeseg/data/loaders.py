"""Training and test data loaders (detectron2's semantics, without detectron2).

* Training: an infinite stream of shuffled indices, identical on every rank (shared seed) and
  split rank-wise; per-rank batch = ``SOLVER.IMS_PER_BATCH`` / world size. Augmentation randomness
  is seeded per rank and worker, so a run is reproducible for a given seed and worker count.
  FreeSeg disabled shuffling whenever samples carried a ``task`` key (stage 1), which made every
  batch single-class; we always shuffle.
* Test: each rank gets a contiguous shard of the data set, in order, batch 1.
* Batches are plain lists of dicts (the model pads). In training, samples whose files are missing
  are dropped with one warning, and a corrupt image is skipped with a warning and counted
  (``DATALOADER.SKIP_CORRUPT``). Test data is never skipped: results on a subset are not
  comparable with published ones, so a missing or unreadable file is an error naming it. Any
  other failure in a worker is re-raised naming the sample's file, as its own one-line message.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from ..utils import comm
from ..utils.errors import ConfigError, FreeSegError
from .catalog import DatasetCatalog
from .mappers import REGION_MAPPERS, CorruptImageError, EmptyRegion, build_mapper
from .sampling import sample_per_task_class

logger = logging.getLogger(__name__)


class TrainingSampler(Sampler[tuple[int, int]]):
    """Infinite shuffled indices; every rank draws the same permutations (``seed``) and keeps
    positions ``rank, rank + world, ...``.

    Yields ``(position, index)``: ``position`` counts this rank's samples from the start of
    training, so a sample's augmentation can be seeded by it (same draws whatever the number of
    workers), and ``start`` skips that many samples without loading them (exact resume)."""

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size <= 0:
            raise FreeSegError("the training data set is empty; check DATASETS.TRAIN and its folders")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.start = 0

    def _infinite(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        while True:
            yield from (torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mine = itertools.islice(self._infinite(), self.rank, None, self.world_size)
        return enumerate(itertools.islice(mine, self.start, None), start=self.start)


class InferenceSampler(Sampler[int]):
    """Contiguous, ordered shard of ``range(size)`` for this rank (sizes differ by at most one)."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1) -> None:
        shard, left = divmod(size, world_size)
        sizes = [shard + int(r < left) for r in range(world_size)]
        begin = sum(sizes[:rank])
        self.indices = list(range(begin, begin + sizes[rank]))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class MappedDataset(Dataset):
    """Applies ``mapper`` to ``dicts[i]``. A corrupt image (with ``skip_corrupt``; the test loaders
    never skip one) or an empty stage-1 region is replaced by another random sample in training
    (``redraw=True``) and gives ``None`` otherwise (dropped from the batch). ``skipped`` counts
    corrupt images across worker processes."""

    def __init__(self, dicts: list[dict], mapper: Callable[[dict], dict], *, redraw: bool, skip_corrupt: bool = True,
                 seed: int = 0) -> None:
        self.dicts, self.mapper = dicts, mapper
        self.redraw, self.skip_corrupt, self.seed = redraw, skip_corrupt, seed
        self.skipped = mp.Value("i", 0)
        # indices given back as their record, unmapped (no image read): samples that an
        # interrupted evaluation has done already (TestLoader.pass_through_first)
        self.unmapped: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self.dicts)

    def _map(self, d: dict) -> dict:
        try:
            return self.mapper(d)
        except (FreeSegError, EmptyRegion):
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the sample's file name
            raise FreeSegError(f"mapping sample {d.get('file_name')} failed: {type(e).__name__}: {e}") from e

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        if isinstance(key, tuple):  # (stream position, index) from TrainingSampler
            position, index = key
            # Augmentations draw from numpy (and random): seed them by the position alone. Torch's
            # global generator is left alone (in a 0-worker loader it is the model's).
            np.random.seed((self.seed + position) % 2**32)
            random.seed(self.seed + position)
        else:
            index = key
            if index in self.unmapped:
                return dict(self.dicts[index])
        for attempt in range(100):
            d = self.dicts[index]
            try:
                return self._map(d)
            except CorruptImageError as e:
                if not self.skip_corrupt:
                    raise
                with self.skipped.get_lock():
                    self.skipped.value += 1
                    n = self.skipped.value
                if n <= 10 or n % 100 == 0:  # do not flood the log on a badly damaged data set
                    logger.warning("skipping corrupt sample (%d skipped so far): %s", n, e)
            except EmptyRegion:
                pass
            if not self.redraw:
                return None
            index = int(np.random.randint(len(self.dicts)))
        raise FreeSegError(f"100 samples in a row failed to map (last: {d.get('file_name')}); check the data set")


class Loader(DataLoader):
    """A DataLoader whose workers' errors reach the user as their own message: PyTorch re-raises a
    worker's exception with the worker's whole traceback as its message, which the command line
    would print as one huge line."""

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except FreeSegError as exc:
                message = worker_error_message(str(exc))
                if message is None:
                    raise
                raise type(exc)(message) from exc
            yield batch


class TestLoader(Loader):
    """The ordered, finite loader of one process's share of a test set."""

    __test__ = False  # not a pytest test class, whatever its name

    def pass_through_first(self, n: int) -> None:
        """The next passes give the first ``n`` samples of this stream as their unmapped records
        (file names, no image read): an evaluation that continues an interrupted one only checks
        their names and skips them."""
        order = [index for batch in self.batch_sampler for index in batch]
        self.dataset.unmapped = frozenset(order[:n])


def worker_error_message(text: str) -> str | None:
    """The original message of an exception PyTorch re-raised from a data loader worker, else
    None. PyTorch's text: "Caught X in DataLoader worker process 0.", then the worker's traceback,
    whose last line is "module.X: message"."""
    first, _, rest = text.partition("\n")
    if not (first.startswith("Caught ") and "DataLoader worker" in first and rest):
        return None
    return rest.rstrip().rsplit("\n", 1)[-1].partition(": ")[2] or None


def _check_workers(num_workers: int) -> None:
    if num_workers < 0:
        raise ConfigError(f"DATALOADER.NUM_WORKERS must be >= 0 (0 loads in the main process), got {num_workers}")


_FILE_KEYS = ("file_name", "sem_seg_file_name", "pan_seg_file_name")


def missing_files(dicts: list[dict]) -> set[str]:
    """The image / label map / panoptic PNG paths of ``dicts`` that do not exist (each checked once)."""
    paths = {d[k] for d in dicts for k in _FILE_KEYS if d.get(k)}
    return {p for p in paths if not os.path.exists(p)}


def trivial_batch_collator(batch: list[dict | None]) -> list[dict]:
    """A batch is the list of mapped dicts (skipped samples removed); the model pads."""
    return [b for b in batch if b is not None]


def _seed_all(seed: int) -> None:
    np.random.seed(seed % 2**32)
    random.seed(seed)
    torch.manual_seed(seed)


def build_train_loader_from(dicts: list[dict], mapper: Callable[[dict], dict], *, total_batch_size: int,
                            num_workers: int = 0, seed: int = 0, skip_corrupt: bool = True,
                            rank: int | None = None, world_size: int | None = None) -> DataLoader:
    """Infinite training loader over ``dicts`` yielding lists of ``total_batch_size // world`` samples."""
    rank = comm.get_rank() if rank is None else rank
    world_size = comm.get_world_size() if world_size is None else world_size
    _check_workers(num_workers)
    if total_batch_size <= 0:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH must be positive, got {total_batch_size}")
    if total_batch_size % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH={total_batch_size} is not divisible by the {world_size} processes; "
            "make it a multiple of the world size"
        )
    per_rank = total_batch_size // world_size
    sampler = TrainingSampler(len(dicts), seed=seed, rank=rank, world_size=world_size)
    # Each sample's augmentation is seeded by (seed, rank, its position in this rank's stream).
    rank_seed = (seed * 1000 + rank) * 10**7
    return TrainLoader(
        MappedDataset(dicts, mapper, redraw=True, skip_corrupt=skip_corrupt, seed=rank_seed),
        batch_sampler=BatchSampler(sampler, per_rank, drop_last=True),
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
        persistent_workers=num_workers > 0,
    )


class TrainLoader(Loader):
    """The infinite training loader; ``set_start_iter(n)`` (called by the trainer on resume,
    before iterating) skips the first ``n`` batches without loading them, so a resumed run
    sees exactly the batches the uninterrupted one would have."""

    def set_start_iter(self, start_iter: int) -> None:
        self.batch_sampler.sampler.start = start_iter * self.batch_sampler.batch_size


def build_test_loader_from(dicts: list[dict], mapper: Callable[[dict], dict], *, batch_size: int = 1,
                           num_workers: int = 0, rank: int | None = None, world_size: int | None = None
                           ) -> DataLoader:
    """Ordered loader over this rank's shard of ``dicts``; an unreadable image is an error."""
    rank = comm.get_rank() if rank is None else rank
    world_size = comm.get_world_size() if world_size is None else world_size
    _check_workers(num_workers)
    sampler = InferenceSampler(len(dicts), rank=rank, world_size=world_size)
    return TestLoader(
        MappedDataset(dicts, mapper, redraw=False, skip_corrupt=False),
        batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
    )


def get_dataset_dicts(names: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """Concatenate registered data sets; each dict gets ``meta = {"dataset_name": name}``."""
    if isinstance(names, str):
        names = [names]
    out = []
    for name in names:
        dicts = DatasetCatalog.get(name)
        if not dicts:
            raise FreeSegError(f"data set '{name}' is empty; check its folders")
        out.extend({**d, "meta": {"dataset_name": name}} for d in dicts)
    return out


def _seed(cfg) -> int:
    return int(cfg.SEED) if cfg.SEED >= 0 else comm.shared_random_seed()


def build_train_loader(cfg) -> DataLoader:
    """Training loader for ``DATASETS.TRAIN`` with the mapper ``INPUT.DATASET_MAPPER_NAME``;
    stage-1 data sets are reduced to ``DATASETS.SAMPLE_PER_CLASS`` per (task, class)."""
    dicts = get_dataset_dicts(cfg.DATASETS.TRAIN)
    missing = missing_files(dicts)
    if missing:
        kept = [d for d in dicts if not any(d.get(k) in missing for k in _FILE_KEYS)]
        logger.warning("skipping %d of %d training samples whose files are missing (%d files, e.g. %s)",
                       len(dicts) - len(kept), len(dicts), len(missing), min(missing))
        dicts = kept
    if cfg.INPUT.DATASET_MAPPER_NAME in REGION_MAPPERS:
        dicts = sample_per_task_class(dicts, cfg.DATASETS.SAMPLE_PER_CLASS, cfg.DATASETS.SAMPLE_SEED)
    return build_train_loader_from(
        dicts, build_mapper(cfg, True), total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        num_workers=cfg.DATALOADER.NUM_WORKERS, seed=_seed(cfg), skip_corrupt=cfg.DATALOADER.SKIP_CORRUPT,
    )


def build_test_loader(cfg, dataset_name: str) -> DataLoader:
    """Sharded, ordered test loader for one data set (batch 1; stage-1 classification sets use
    ``SOLVER.TEST_IMS_PER_BATCH``). A file the data set names that is missing is an error."""
    region = cfg.INPUT.DATASET_MAPPER_NAME in REGION_MAPPERS
    dicts = get_dataset_dicts([dataset_name])
    missing = missing_files(dicts)
    if missing:
        raise FreeSegError(
            f"data set '{dataset_name}': {len(missing)} file(s) it names are missing, e.g. {min(missing)}; "
            "results on the rest would not be comparable with published ones: restore them (re-run the "
            "preparation script)"
        )
    return build_test_loader_from(
        dicts, build_mapper(cfg, False),
        batch_size=cfg.SOLVER.TEST_IMS_PER_BATCH if region else 1,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
