"""Loaders: determinism per seed, rank sharding, batch split, bad input in workers."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from freeseg.data.loaders import (
    InferenceSampler,
    TrainingSampler,
    build_test_loader_from,
    build_train_loader_from,
)
from freeseg.data.mappers import CorruptImageError, SemanticMapper
from freeseg.data.sampling import sample_per_task_class
from freeseg.data.transforms import ColorAugSSD, RandomCropCategoryAreaConstraint, RandomFlip, ResizeShortestEdge
from freeseg.utils.errors import ConfigError, FreeSegError

from .fakes import corrupt_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sem_dicts(tmp_path: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(6):
        img, lab = tmp_path / f"{i}.jpg", tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(img)
        sem = np.full((40, 50), 255, np.uint8)
        sem[:20] = i % 3
        sem[20:, :25] = 3
        Image.fromarray(sem).save(lab)
        out.append({"file_name": str(img), "sem_seg_file_name": str(lab), "image_id": i})
    return out


def _mapper(num_classes: int = 4) -> SemanticMapper:
    augs = [ResizeShortestEdge([32, 40, 48], 100, "choice"), RandomCropCategoryAreaConstraint("absolute", (24, 24), 1.0),
            ColorAugSSD(), RandomFlip()]
    return SemanticMapper(augmentations=augs, num_classes=num_classes, size_divisibility=24)


def _take(loader, n: int) -> list[list[dict]]:
    return list(itertools.islice(iter(loader), n))


def _sig(batches) -> list[tuple]:
    return [(d["image_id"], int(d["image"].long().sum())) for b in batches for d in b]


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_deterministic_per_seed(sem_dicts, workers: int) -> None:
    a = _sig(_take(build_train_loader_from(sem_dicts, _mapper(), total_batch_size=2, num_workers=workers, seed=3), 4))
    b = _sig(_take(build_train_loader_from(sem_dicts, _mapper(), total_batch_size=2, num_workers=workers, seed=3), 4))
    c = _sig(_take(build_train_loader_from(sem_dicts, _mapper(), total_batch_size=2, num_workers=workers, seed=4), 4))
    assert a == b and a != c
    assert len(a) == 8


def _indices(sampler, n: int) -> list[int]:
    pairs = list(itertools.islice(iter(sampler), n))
    assert [p for p, _ in pairs] == list(range(sampler.start, sampler.start + n))  # stream positions
    return [i for _, i in pairs]


def test_training_sampler_shards_one_shuffled_stream() -> None:
    full = _indices(TrainingSampler(7, seed=1), 28)
    r0 = _indices(TrainingSampler(7, seed=1, rank=0, world_size=2), 14)
    r1 = _indices(TrainingSampler(7, seed=1, rank=1, world_size=2), 14)
    assert r0 == full[0::2] and r1 == full[1::2]
    assert sorted(full[:7]) == list(range(7)) and full[:7] != list(range(7))  # a permutation, shuffled
    late = TrainingSampler(7, seed=1, rank=1, world_size=2)
    late.start = 5
    assert _indices(late, 9) == r1[5:]


def test_augmentation_is_independent_of_workers_and_resume_is_exact(sem_dicts) -> None:
    def loader(workers: int):
        return build_train_loader_from(sem_dicts, _mapper(), total_batch_size=2, num_workers=workers, seed=3)

    straight = _sig(_take(loader(0), 6))
    assert _sig(_take(loader(2), 6)) == straight  # same draws whatever the number of workers
    resumed = loader(0)
    resumed.set_start_iter(4)  # what the trainer calls when resuming at iteration 4
    assert _sig(_take(resumed, 2)) == straight[8:]


def test_per_rank_batch_and_divisibility(sem_dicts) -> None:
    loader = build_train_loader_from(sem_dicts, _mapper(), total_batch_size=4, rank=1, world_size=2)
    assert len(next(iter(loader))) == 2
    with pytest.raises(ConfigError, match="IMS_PER_BATCH=3 is not divisible by the 2"):
        build_train_loader_from(sem_dicts, _mapper(), total_batch_size=3, rank=0, world_size=2)
    with pytest.raises(ConfigError, match="IMS_PER_BATCH must be positive, got 0"):
        build_train_loader_from(sem_dicts, _mapper(), total_batch_size=0)


def test_inference_sampler_and_test_loader_sharding(sem_dicts) -> None:
    shards = [InferenceSampler(7, rank=r, world_size=3).indices for r in range(3)]
    assert shards == [[0, 1, 2], [3, 4], [5, 6]]
    from freeseg.data.mappers.test import TestMapper

    ids = []
    for r in range(2):
        loader = build_test_loader_from(sem_dicts, TestMapper(min_size=20, max_size=100), rank=r, world_size=2)
        batches = list(loader)
        assert all(len(b) == 1 for b in batches)
        ids.append([b[0]["image_id"] for b in batches])
    assert ids == [[0, 1, 2], [3, 4, 5]]


def test_corrupt_images_are_skipped_and_counted(sem_dicts) -> None:
    corrupt_file(sem_dicts[1]["file_name"])
    corrupt_file(sem_dicts[4]["file_name"])
    loader = build_train_loader_from(sem_dicts, _mapper(), total_batch_size=3, num_workers=2, seed=0)
    seen = {d["image_id"] for b in _take(loader, 8) for d in b}
    assert seen <= {0, 2, 3, 5} and len(seen) >= 3
    assert loader.dataset.skipped.value >= 2
    from freeseg.data.mappers.test import TestMapper

    # test data is never skipped: a subset is not comparable with published results
    for workers in (0, 1):
        test = build_test_loader_from(sem_dicts, TestMapper(min_size=20, max_size=100), num_workers=workers)
        with pytest.raises(CorruptImageError, match=r"cannot decode image .*1\.jpg") as info:
            list(test)
        assert "\n" not in str(info.value)  # the worker's own message, not its traceback


def test_worker_errors_name_the_file(sem_dicts) -> None:
    loader = build_train_loader_from(sem_dicts, _mapper(num_classes=2), total_batch_size=2, num_workers=2, seed=0)
    with pytest.raises(FreeSegError, match=r"^label map .*\d\.png holds value [23], outside the 2 classes") as info:
        _take(loader, 3)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)  # one line, not the worker's dump


def test_worker_error_message_unwraps_only_pytorch_wrapping() -> None:
    from freeseg.data.loaders import worker_error_message

    wrapped = ("Caught FreeSegError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nfreeseg.utils.errors.FreeSegError: image a.jpg: not found')
    assert worker_error_message(wrapped) == "image a.jpg: not found"
    assert worker_error_message("image a.jpg: not found") is None


def test_negative_worker_count_is_a_config_error(sem_dicts) -> None:
    from freeseg.data.mappers.test import TestMapper

    with pytest.raises(ConfigError, match=r"DATALOADER\.NUM_WORKERS must be >= 0 .*got -1"):
        build_train_loader_from(sem_dicts, _mapper(), total_batch_size=2, num_workers=-1)
    with pytest.raises(ConfigError, match=r"DATALOADER\.NUM_WORKERS must be >= 0"):
        build_test_loader_from(sem_dicts, TestMapper(min_size=20, max_size=100), num_workers=-1)


@pytest.fixture
def world_cfg(builtin_root: Path):
    """The quickstart world (3 training, 2 validation images) under the built-in names, and the
    quickstart's config reading it in the main process."""
    from freeseg.config import get_cfg
    from freeseg.data.world.writer import write_split

    root = builtin_root / "freeseg_world"
    write_split(root, "train", 3, seed=1)
    write_split(root, "val", 2, seed=2)
    cfg = get_cfg().merge_from_file(REPO / "configs/quickstart/alltask.yaml")
    cfg.merge_from_list(["DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 1])
    return root, cfg


def test_missing_files_skip_training_samples_but_stop_evaluation(world_cfg, caplog) -> None:
    from freeseg.data.loaders import build_test_loader, build_train_loader

    root, cfg = world_cfg
    (root / "panoptic_detectron2" / "train2017_base" / "000000100001.png").unlink()
    with caplog.at_level("WARNING", logger="freeseg.data.loaders"):
        loader = build_train_loader(cfg)
    assert len(loader.dataset) == 2
    assert caplog.text.count("skipping 1 of 3 training samples whose files are missing") == 1
    assert "000000100001.png" in caplog.text
    assert len(build_test_loader(cfg, "world_val_full_task").dataset) == 2  # complete: no error
    (root / "val2017" / "000000200000.jpg").unlink()
    with pytest.raises(FreeSegError, match=r"'world_val_full_task': 1 file\(s\) it names are missing, e\.g\. .*000000200000\.jpg"):
        build_test_loader(cfg, "world_val_full_task")


def test_truncated_annotation_json_names_the_file(world_cfg) -> None:
    from freeseg.data import DatasetCatalog

    root, _ = world_cfg
    path = root / "panoptic_detectron2" / "panoptic_val2017.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(FreeSegError, match=r"panoptic_val2017\.json is not valid JSON \(.*\); the file is damaged or truncated"):
        DatasetCatalog.get("world_val_full_task")


def test_sample_per_task_class_without_replacement() -> None:
    dicts = [{"task": t, "category_id": c, "k": k} for t in ("sem_seg", "pan_seg") for c in (0, 1) for k in range(10)]
    dicts += [{"task": "sem_seg", "category_id": 2, "k": 0}]
    out = sample_per_task_class(dicts, 4, seed=0)
    assert len(out) == 4 * 4 + 1
    groups = {}
    for d in out:
        groups.setdefault((d["task"], d["category_id"]), []).append(d["k"])
    assert all(len(set(v)) == len(v) for v in groups.values())  # no duplicates
    assert out == sample_per_task_class(dicts, 4, seed=0) and out != sample_per_task_class(dicts, 4, seed=1)
    assert sample_per_task_class(dicts, -1, seed=0) == dicts


def test_missing_image_is_an_error_not_a_skip(sem_dicts) -> None:
    import os

    os.remove(sem_dicts[0]["file_name"])
    loader = build_train_loader_from(sem_dicts[:1], _mapper(), total_batch_size=1, seed=0)
    with pytest.raises(FreeSegError, match=r"image .*0\.jpg not found"):
        _take(loader, 1)
