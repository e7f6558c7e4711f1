"""The quickstart's evaluation with a zero-shot control, its results table and demo pictures."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("freeseg.quickstart")

# (result family, key, column label)
_COLUMNS = (
    ("sem_seg", "mIoU", "mIoU"), ("sem_seg", "mIoU-base", "mIoU seen"),
    ("sem_seg", "mIoU-unbase", "mIoU unseen"), ("sem_seg", "hIoU-base", "hIoU"),
    ("panoptic_seg", "PQ", "PQ"), ("panoptic_seg", "PQ-seen", "PQ seen"),
    ("panoptic_seg", "PQ-unseen", "PQ unseen"),
    ("segm", "AP", "AP"), ("segm", "AP-seen", "AP seen"), ("segm", "AP-unseen", "AP unseen"),
)


def _load_model(config: Path, opts: list[str]) -> tuple[Any, Any]:
    from .. import build_model, get_cfg, load_checkpoint

    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(opts)
    cfg.freeze()
    model = build_model(cfg)
    load_checkpoint(model, cfg.MODEL.WEIGHTS)
    model.eval()
    return cfg, model


def shuffled_unseen(names: list[str], flags: list[int]) -> list[str]:
    """The vocabulary with the unseen names rotated among themselves: every unseen class gets
    another unseen class's text (a derangement), seen classes keep theirs."""
    unseen = [i for i, f in enumerate(flags) if not f]
    out = list(names)
    for i, j in zip(unseen, unseen[1:] + unseen[:1]):
        out[i] = names[j]
    return out


def evaluate_with_control(config: Path, opts: list[str]) -> dict[str, Any]:
    """Evaluate the trained model on all classes, then again with the unseen names shuffled.

    The control keeps everything (weights, seen classes, masks) and swaps only which text each
    unseen class is matched against; if the unseen score comes from the class names, it falls.
    """
    from ..data.loaders import build_test_loader
    from ..engine.defaults import vocabulary_from_metadata
    from ..evaluation import build_evaluator, inference_on_dataset

    cfg, model = _load_model(config, opts)
    name = cfg.DATASETS.TEST[0]
    vocab = vocabulary_from_metadata(name)
    out: dict[str, Any] = {"dataset": name, "classes": vocab["class_names"],
                           "trainable_flag": vocab["trainable_flag"]}
    for run, names in (("model", vocab["class_names"]),
                       ("control", shuffled_unseen(vocab["class_names"], vocab["trainable_flag"]))):
        model.set_vocabulary(names, vocab["trainable_flag"], vocab["thing_flags"])
        evaluator = build_evaluator(cfg, name, str(Path(cfg.OUTPUT_DIR) / run))
        logger.info("evaluating %s on %s", run, name)
        out[run] = inference_on_dataset(model, build_test_loader(cfg, name), evaluator)
    return out


def format_table(results: dict[str, Any]) -> str:
    """The quickstart's closing table: one row for the model, one for the control."""
    head = f"{'':<34}" + "".join(f"{label:>12}" for _, _, label in _COLUMNS)
    lines = [f"Zero-shot results on '{results['dataset']}' "
             f"({sum(results['trainable_flag'])} seen, "
             f"{len(results['trainable_flag']) - sum(results['trainable_flag'])} unseen classes)",
             head, "-" * len(head)]
    rows = (("model", "FreeSeg (quickstart)"),
            ("control", "control: unseen names shuffled"))
    for key, label in rows:
        cells = []
        for family, metric, _ in _COLUMNS:
            value = results.get(key, {}).get(family, {}).get(metric)
            cells.append(f"{value:>12.1f}" if isinstance(value, (int, float)) else f"{'-':>12}")
        lines.append(f"{label:<34}" + "".join(cells))
    return "\n".join(lines)


def novel_images(world_root: Path, count: int) -> list[Path]:
    """Validation images that contain an unseen class, most unseen segments first."""
    import json

    from ..data.world.classes import world_classes

    unseen = {c.id for c in world_classes() if not c.seen}
    info = json.loads((world_root / "panoptic_detectron2" / "panoptic_val2017.json").read_text())
    scored = [(sum(s["category_id"] in unseen for s in a["segments_info"]), a["file_name"])
              for a in info["annotations"]]
    picked = sorted((s for s in scored if s[0] > 0), key=lambda s: -s[0])[:count]
    return [world_root / "val2017" / name.replace(".png", ".jpg") for _, name in picked]


def demo_pictures(config: Path, opts: list[str], world_root: Path, out_dir: Path, count: int) -> None:
    """Run the demo (the same command users run) on validation images with unseen classes."""
    import subprocess
    import sys

    from ..utils.errors import FreeSegError

    from PIL import Image

    images = novel_images(world_root, count)
    if not images:
        raise FreeSegError(f"no validation image of {world_root} contains an unseen class; regenerate the world")
    # The world's 128-pixel images, enlarged 3x so that the pictures' labels are readable; the
    # model still sees 128 pixels (the test mapper resizes to MIN_SIZE_TEST).
    big_dir = out_dir.parent / "demo_inputs"
    big_dir.mkdir(parents=True, exist_ok=True)
    enlarged = []
    for path in images:
        im = Image.open(path).convert("RGB")
        enlarged.append(big_dir / (path.stem + ".png"))
        im.resize((im.width * 3, im.height * 3), Image.BICUBIC).save(enlarged[-1])
    images = enlarged
    cmd = [sys.executable, "-m", "freeseg", "demo", "--config-file", str(config),
           "--input", *map(str, images), "--output", str(out_dir),
           "--task", "semantic", "panoptic", "--opts", *opts]
    logger.info("$ %s", " ".join(cmd[1:]))
    if subprocess.run(cmd).returncode != 0:
        raise FreeSegError("the demo step failed; see its log above")
    pictures = sorted(p.name for p in out_dir.glob("*.png")
                      if p.stem.endswith(("_semantic", "_panoptic")))  # the overlays, not label maps
    (out_dir / "index.txt").write_text("\n".join(pictures) + "\n")
