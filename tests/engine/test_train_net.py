"""Both FreeSeg stages through train_net.main on the tiny configs, a tiny CLIP and a tiny world."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from freeseg.data.catalog import DatasetCatalog, MetadataCatalog
from freeseg.engine import train_net
from freeseg.utils.errors import FreeSegError

REPO = Path(__file__).resolve().parents[2]
WORLD_SETS = ("world_train_full_task_base", "world_train_full_task_base_classification",
              "world_val_full_task", "world_val_full_task_classification")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The quickstart world's data sets re-registered on 2 train / 1 val generated images."""
    from freeseg.data.world.register import register_world, world_root
    from freeseg.data.world.writer import write_split

    root = tmp_path_factory.mktemp("datasets")
    write_split(Path(world_root(str(root))), "train", 2, seed=1)
    write_split(Path(world_root(str(root))), "val", 1, seed=2)
    saved = {n: (dict.pop(DatasetCatalog, n, None), dict.pop(MetadataCatalog, n, None)) for n in WORLD_SETS}
    register_world(str(root))
    yield root
    for name, (fn, meta) in saved.items():
        dict.pop(DatasetCatalog, name, None)
        dict.pop(MetadataCatalog, name, None)
        if fn is not None:
            DatasetCatalog[name] = fn
        if meta is not None:
            MetadataCatalog[name] = meta


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> str:
    from freeseg.modeling.clip import ClipArch, build_clip_from_arch

    torch.manual_seed(0)
    arch = ClipArch(embed_dim=64, vision_layers=1, vision_width=64, vision_patch_size=16, image_size=224,
                    context_length=77, vocab_size=49408, text_width=64, text_layers=1)
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(build_clip_from_arch(arch).state_dict(), path)
    return str(path)


def _args(config: str, out: Path, clip: str, train: str, test: str, *opts: str, eval_only=False):
    return argparse.Namespace(
        config_file=str(REPO / "configs" / "tiny" / config), resume=False, eval_only=eval_only,
        num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto",
        opts=["MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", clip, "DATASETS.TRAIN", f"('{train}',)",
              "DATASETS.TEST", f"('{test}',)", "SOLVER.MAX_ITER", "2", "SOLVER.LOG_PERIOD", "1",
              "OUTPUT_DIR", str(out), *opts])


def _losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def test_stage2_all_task_model_trains_evaluates_and_reloads(world, clip_file, tmp_path):
    opts = ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "14", "MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL", "pytorch")
    args = _args("tiny_alltask.yaml", tmp_path, clip_file, "world_train_full_task_base", "world_val_full_task", *opts)
    results = train_net.main(args)
    rows = _losses(tmp_path)
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1]
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "lr"} <= set(rows[0])
    assert "PQ" in results["panoptic_seg"]
    assert any("panoptic_seg/PQ" in r for r in rows)  # final evaluation logged too
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "model_final.pth").exists()

    again = train_net.main(_args("tiny_alltask.yaml", tmp_path / "eval", clip_file, "world_train_full_task_base",
                                 "world_val_full_task", *opts, "MODEL.WEIGHTS", str(tmp_path / "model_final.pth"),
                                 eval_only=True))
    for family in ("panoptic_seg", "segm"):  # the reloaded weights give the same numbers
        for key, value in results[family].items():
            assert again[family][key] == value or (value != value and again[family][key] != again[family][key]), key


def test_stage1_prompt_learning_trains_only_the_prompts(world, clip_file, tmp_path):
    args = _args("tiny_learn_prompt.yaml", tmp_path, clip_file, "world_train_full_task_base_classification",
                 "world_val_full_task_classification")
    results = train_net.main(args)
    assert "Top1" in results["classification"]
    rows = _losses(tmp_path)
    assert {"loss_cls", "total_loss", "lr"} <= set(rows[0])
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    trainable = [k for k in final["optimizer"]["param_groups"][0]["names"]]
    assert sorted(trainable) == ["clip_adapter.prompt_learner.prefix_prompt", "clip_adapter.prompt_learner.task_prompt"]


def test_eval_only_needs_weights(world, clip_file, tmp_path):
    base = ("tiny_learn_prompt.yaml", tmp_path, clip_file, "world_train_full_task_base_classification",
            "world_val_full_task_classification")
    with pytest.raises(FreeSegError, match=r"^--eval-only needs a trained model: add 'MODEL.WEIGHTS path/to/model_final.pth'"):
        train_net.main(_args(*base, eval_only=True))
    # FreeSeg's configs name the ImageNet backbone that training starts from: not something to evaluate
    with pytest.raises(FreeSegError, match=r"^MODEL.WEIGHTS is detectron2://DeepLab/R-103.pkl, the ImageNet backbone "
                       r"that the config's training starts from, not a trained model; --eval-only needs one"):
        train_net.main(_args(*base, "MODEL.WEIGHTS", "detectron2://DeepLab/R-103.pkl", eval_only=True))
    with pytest.raises(FreeSegError, match="weights file not found: .*absent.pth"):
        train_net.main(_args(*base, "MODEL.WEIGHTS", str(tmp_path / "absent.pth"), eval_only=True))


def test_command_line_prints_one_error_line(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, str(REPO / "train_net.py"), "--config-file", str(REPO / "configs/tiny/tiny_alltask.yaml"),
           "--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "3", "OUTPUT_DIR", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: SOLVER.IMS_PER_BATCH=3 does not divide among 2 processes; use a multiple of 2"]


def test_no_clip_weights_is_an_error_before_training(world, clip_file, tmp_path, monkeypatch):
    """Without a CLIP file the frozen CLIP would stay random: refused before any iteration, and
    for evaluation of a checkpoint without CLIP tensors; ``CLIP_WEIGHTS random`` asks for it."""
    monkeypatch.chdir(tmp_path)  # no weights/ViT-B-16.pt here
    monkeypatch.delenv("FREESEG_CLIP_WEIGHTS", raising=False)
    base = ("tiny_learn_prompt.yaml", tmp_path / "train", "", "world_train_full_task_base_classification",
            "world_val_full_task_classification")
    with pytest.raises(FreeSegError, match=r"^No CLIP weights file was found: put OpenAI's ViT-B-16\.pt at "
                                           r"weights/ViT-B-16\.pt .*CLIP_WEIGHTS random"):
        train_net.main(_args(*base))
    assert not (tmp_path / "train" / "metrics.json").exists()

    trained = tmp_path / "trained"
    train_net.main(_args(*base[:1], trained, clip_file, *base[3:]))
    state = torch.load(trained / "model_final.pth", weights_only=True)
    no_clip = tmp_path / "no_clip.pth"
    torch.save({"model": {k: v for k, v in state["model"].items() if not k.startswith("clip_adapter.clip_model.")}},
               no_clip)
    with pytest.raises(FreeSegError, match=rf"^{no_clip} holds no CLIP weights and no CLIP weights file was found"):
        train_net.main(_args(*base, "MODEL.WEIGHTS", str(no_clip), eval_only=True))
    # the full checkpoint carries its CLIP: evaluation needs no file
    results = train_net.main(_args(*base, "MODEL.WEIGHTS", str(trained / "model_final.pth"), eval_only=True))
    assert "Top1" in results["classification"]


def test_random_clip_on_purpose_passes_the_check(tmp_path, monkeypatch):
    from freeseg.config import get_cfg

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FREESEG_CLIP_WEIGHTS", raising=False)
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", "random"])
    model = torch.nn.Module()
    model.clip_adapter = torch.nn.Module()
    train_net.require_clip(cfg, model, None, "")  # no error
    cfg.merge_from_list(["MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", ""])
    with pytest.raises(FreeSegError, match="No CLIP weights file"):
        train_net.require_clip(cfg, model, None, "")


def test_eval_only_refuses_a_checkpoint_of_another_model(world, clip_file, tmp_path):
    """A stage-1 checkpoint fills only the CLIP adapter of the stage-2 model: evaluating it would
    report the score of random weights; the eval is refused before any image is read."""
    stage1 = ("tiny_learn_prompt.yaml", tmp_path / "stage1", clip_file, "world_train_full_task_base_classification",
              "world_val_full_task_classification")
    train_net.main(_args(*stage1))
    opts = ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "14", "MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL", "pytorch",
            "MODEL.WEIGHTS", str(tmp_path / "stage1" / "model_final.pth"))
    out = tmp_path / "eval"
    with pytest.raises(FreeSegError, match=r"^checkpoint .*stage1/model_final.pth does not match config "
                                           r".*tiny_alltask.yaml: \d+ model tensors missing, 0 unexpected \(e.g. "
                                           r"backbone\..*\); pass the --config-file \(and KEY VALUE overrides\)"):
        train_net.main(_args("tiny_alltask.yaml", out, clip_file, "world_train_full_task_base", "world_val_full_task",
                             *opts, eval_only=True))
    assert not (out / "inference").exists()


def test_stopped_by_a_signal_saves_then_ends_with_status_130(world, clip_file, tmp_path, monkeypatch):
    import os
    import signal

    from freeseg.engine.train_loop import HookBase, TrainingStopped

    class CtrlC(HookBase):
        def after_step(self):
            if self.trainer.iter == 0:
                os.kill(os.getpid(), signal.SIGINT)

    build_hooks = train_net.build_hooks
    monkeypatch.setattr(train_net, "build_hooks", lambda *a, **k: build_hooks(*a, **k) + [CtrlC()])
    args = _args("tiny_learn_prompt.yaml", tmp_path, clip_file, "world_train_full_task_base_classification",
                 "world_val_full_task_classification", "SOLVER.MAX_ITER", "5")
    with pytest.raises(TrainingStopped, match=r"^stopped by SIGINT after iteration 1; rerun with --resume") as info:
        train_net.main(args)
    assert info.value.exit_status == 130  # so that `train && eval` stops
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


@pytest.mark.parametrize("device, message", [
    ("gpu", r"^MODEL.DEVICE 'gpu' is not a device; use cpu or cuda"),
    ("None", r"^MODEL.DEVICE 'None' is not a device"),
    ("cuda", r"^MODEL.DEVICE cuda, but no CUDA GPU is usable here; add 'MODEL.DEVICE cpu'"),
])
def test_bad_model_device_is_one_line_before_any_work(tmp_path, monkeypatch, device, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = _args("tiny_learn_prompt.yaml", tmp_path / "out", "", "a", "b", "MODEL.DEVICE", device)
    with pytest.raises(FreeSegError, match=message):
        train_net.main(args)
    assert not (tmp_path / "out").exists()


def test_eval_only_stopped_by_a_signal_continues_where_it_stopped(world, clip_file, tmp_path, monkeypatch):
    """`--eval-only` saves its progress when stopped (exit 130); the same command evaluates only
    the rest, with the numbers of an uninterrupted run."""
    import signal

    import freeseg.modeling
    from freeseg.evaluation.evaluator import EvaluationStopped

    stage1 = ("tiny_learn_prompt.yaml", tmp_path / "train", clip_file, "world_train_full_task_base_classification",
              "world_val_full_task_classification")
    train_net.main(_args(*stage1))
    weights = ("MODEL.WEIGHTS", str(tmp_path / "train" / "model_final.pth"), "SOLVER.TEST_IMS_PER_BATCH", "1")
    full = train_net.main(_args(*stage1[:1], tmp_path / "full", *stage1[2:], *weights, eval_only=True))

    calls: list[int] = []
    stop_at: list[int] = [2]
    build = freeseg.modeling.build_model

    def counting_build(cfg):
        model = build(cfg)
        forward = model.forward

        def counted(batch):
            if len(calls) in stop_at:
                stop_at.clear()
                signal.raise_signal(signal.SIGINT)
            calls.append(len(batch))
            return forward(batch)

        model.forward = counted
        return model

    monkeypatch.setattr(freeseg.modeling, "build_model", counting_build)
    out = tmp_path / "eval"
    args = _args(*stage1[:1], out, *stage1[2:], *weights, eval_only=True)
    with pytest.raises(EvaluationStopped, match=r"^evaluation stopped by SIGINT: 2 of (\d+) images") as info:
        train_net.main(args)
    assert info.value.exit_status == 130
    progress = out / "inference" / "world_val_full_task_classification" / "eval_progress.rank0.pth"
    assert progress.is_file()
    total = int(info.value.args[0].split(" of ")[1].split()[0])  # "2 of N images"

    calls.clear()
    resumed = train_net.main(args)
    assert len(calls) == total - 2  # only what the stopped run had not evaluated
    assert resumed["classification"] == full["classification"]
    assert not progress.exists()


def test_evaluation_fingerprint_follows_what_changes_results(tmp_path):
    import os

    from freeseg.config import get_cfg

    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"weights")

    def fingerprint(*opts, clip=""):
        cfg = get_cfg()
        cfg.merge_from_list(list(opts))
        return train_net.evaluation_fingerprint(cfg, str(weights), clip)

    base = fingerprint()
    assert fingerprint("DATALOADER.NUM_WORKERS", "7", "OUTPUT_DIR", "elsewhere", "MODEL.DEVICE", "cuda") == base
    assert fingerprint("MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.3") != base
    assert fingerprint("INPUT.MIN_SIZE_TEST", "512") != base
    assert fingerprint("DATASETS.TEST", "('other',)") != base
    os.utime(weights, ns=(1, 1))  # retrained into the same file
    assert fingerprint() != base


def _train_on_custom(spec: Path, prefix: str, out: Path, clip_file: str, *opts: str, seen: int = 3) -> dict:
    """train_net on ``<prefix>_train`` (``seen`` classes), evaluated on ``<prefix>_val``, of the
    YAML file ``spec``; its data sets are unregistered afterwards."""
    try:
        return train_net.main(_args("tiny_alltask.yaml", out, clip_file, f"{prefix}_train", f"{prefix}_val",
                                    "DATASETS.CUSTOM", f"('{spec}',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(seen),
                                    "MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL", "pytorch", *opts))
    finally:
        for name in [n for n in list(DatasetCatalog) if n.startswith(f"{prefix}_")]:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_stage2_trains_and_evaluates_on_your_own_data_set(clip_file, tmp_path):
    """A semantic data set from a YAML file (DATASETS.CUSTOM): trained on its seen classes,
    evaluated on all with seen / unseen mIoU."""
    from tests.data.test_custom import write_custom_data

    spec = write_custom_data(tmp_path / "data", "mine_e2e")
    results = _train_on_custom(spec, "mine_e2e", tmp_path / "out", clip_file,
                               "INPUT.DATASET_MAPPER_NAME", "mask_former_semantic",
                               "INPUT.TASK_NAME", "['semantic segmentation.']",
                               "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False", "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False")
    assert {"mIoU", "mIoU-base", "mIoU-unbase"} <= set(results["sem_seg"])
    assert _losses(tmp_path / "out")[0]["iteration"] == 0


def test_stage2_trains_and_evaluates_on_your_own_panoptic_data_set(clip_file, tmp_path):
    """A COCO-panoptic-format data set from a YAML file: the all-task model trains on its seen
    classes and is scored with mIoU, PQ and AP, seen and unseen."""
    from tests.data.test_custom_panoptic import write_panoptic_data

    spec = write_panoptic_data(tmp_path / "data", "mine_pan_e2e")
    results = _train_on_custom(spec, "mine_pan_e2e", tmp_path / "out", clip_file,
                               "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "True")
    assert {"mIoU-base", "mIoU-unbase"} <= set(results["sem_seg"])
    assert {"PQ", "PQ-seen", "PQ-unseen"} <= set(results["panoptic_seg"])
    assert {"AP", "AP-seen", "AP-unseen"} <= set(results["segm"])
    assert _losses(tmp_path / "out")[0]["iteration"] == 0


def test_stage2_trains_and_evaluates_on_your_own_instance_data_set(clip_file, tmp_path):
    """A COCO instance JSON from a YAML file: converted once, trained on its seen classes, scored
    with AP (seen / unseen) against the JSON's own masks."""
    from tests.data.test_custom_instances import write_instance_data

    spec = write_instance_data(tmp_path / "data", "mine_ins_e2e")
    results = _train_on_custom(spec, "mine_ins_e2e", tmp_path / "out", clip_file,
                               "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False", seen=2)
    assert set(results) == {"segm", "open_world"}
    assert {"AP", "AP-seen", "AP-unseen"} <= set(results["segm"])
    assert (tmp_path / "data" / "annotations" / "instances_train_panoptic.json").exists()
