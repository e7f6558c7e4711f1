"""`freeseg quickstart` (what `make demo` runs): the whole FreeSeg recipe on a generated world.

Steps, each skipped when its output exists (so an interrupted run resumes where it stopped):

1. data    render the world into ``$DETECTRON2_DATASETS/freeseg_world`` (COCO full-task layout)
2. clip    pre-train a tiny CLIP on the world's captions (stand-in for OpenAI's CLIP)
3. stage1  ``train_net.py --config-file configs/quickstart/learn_prompt.yaml`` (prompts, base classes)
4. stage2  ``train_net.py --config-file configs/quickstart/alltask.yaml`` (all tasks, base classes)
5. eval    seen / unseen / harmonic mIoU, PQ and AP on all classes, plus a control run in which
           the unseen classes' names are shuffled among themselves (zero-shot signal check)
6. demo    overlay pictures of validation images that contain unseen classes
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..utils.errors import FreeSegError

logger = logging.getLogger("freeseg.quickstart")
STEPS = ("data", "clip", "stage1", "stage2", "eval", "demo")
REPO = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="freeseg quickstart",
        description="Run the whole FreeSeg recipe (tiny CLIP, stage 1 prompts, stage 2 all-task "
                    "model, zero-shot evaluation, demo pictures) on a generated world, on CPU.",
    )
    p.add_argument("--output", default="output/quickstart", help="where runs and pictures go")
    p.add_argument("--datasets", default=os.environ.get("DETECTRON2_DATASETS", "datasets"),
                   help="data set root ($DETECTRON2_DATASETS); the world goes in freeseg_world/")
    p.add_argument("--weights", default="weights/quickstart", help="where the tiny CLIP goes")
    p.add_argument("--only", choices=STEPS, action="append",
                   help="run only these steps (repeatable); default: all")
    p.add_argument("--short", action="store_true",
                   help="a shortened chain (smaller world, fewer iterations) for tests")
    p.add_argument("--fresh", action="store_true", help="redo every step even if outputs exist")
    return p


class Plan:
    """Sizes of one quickstart run (the full one, or --short for tests)."""

    def __init__(self, short: bool) -> None:
        self.train_images, self.val_images = (24, 8) if short else (400, 80)
        self.clip_scenes, self.clip_steps, self.clip_batch = (16, 6, 32) if short else (500, 400, 64)
        self.stage1_iters, self.stage2_iters = (4, 6) if short else (150, 600)
        self.demo_images = 2 if short else 4


def _train_net(config: Path, opts: list[str], flags: Sequence[str] = ()) -> None:
    """Run FreeSeg's command line in a child process, exactly as a user would."""
    cmd = [sys.executable, "-m", "freeseg", "train", "--config-file", str(config), *flags, *opts]
    logger.info("$ %s", " ".join(cmd[1:]))
    done = subprocess.run(cmd, cwd=os.getcwd())
    if done.returncode != 0:
        raise FreeSegError(f"'{' '.join(cmd[2:5])} …' failed (exit {done.returncode}); see its "
                           "log above, fix, then rerun `make demo` (finished steps are kept)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[quickstart] %(message)s")
    steps = args.only or list(STEPS)
    plan = Plan(args.short)
    out, weights = Path(args.output), Path(args.weights)
    os.environ["DETECTRON2_DATASETS"] = args.datasets  # the child processes register from it
    clip_path = weights / "tiny_clip.pt"
    stage1, stage2 = out / "stage1", out / "stage2"
    common = [f"MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", str(clip_path)]
    timings: dict[str, float] = {}
    configs = REPO / "configs" / "quickstart"

    def step(name: str, done_marker: Path, fn) -> None:
        if name not in steps:
            return
        if done_marker.exists() and not args.fresh:
            logger.info("%s: already done (%s); --fresh redoes it", name, done_marker)
            return
        logger.info("=== %s ===", name)
        start = time.time()
        fn()
        timings[name] = time.time() - start

    from ..data.world.register import world_root

    root = Path(world_root(args.datasets))

    def make_world() -> None:
        from ..data.world.writer import write_split

        write_split(root, "train", plan.train_images, seed=1)
        write_split(root, "val", plan.val_images, seed=2)

    def make_clip() -> None:
        from ..data.world.clip_pretrain import pretrain_tiny_clip

        summary = pretrain_tiny_clip(clip_path, num_scenes=plan.clip_scenes, steps=plan.clip_steps,
                                     batch_size=plan.clip_batch)
        logger.info("tiny CLIP: region accuracy seen %.1f%%, unseen %.1f%% (%.0f s)",
                    100 * summary["region_acc_seen"], 100 * summary["region_acc_unseen"],
                    summary["seconds"])

    # Training refuses to overwrite a run without --resume: an interrupted stage continues, and
    # --fresh removes the stage's folder first (it holds only this command's outputs).
    def fresh_folder(folder: Path) -> None:
        if args.fresh and folder.exists():
            shutil.rmtree(folder)

    def run_stage1() -> None:
        fresh_folder(stage1)
        _train_net(configs / "learn_prompt.yaml", common + [
            "OUTPUT_DIR", str(stage1), "SOLVER.MAX_ITER", str(plan.stage1_iters),
            "SOLVER.CHECKPOINT_PERIOD", str(plan.stage1_iters), "DATASETS.TEST", "()"], flags=["--resume"])

    def run_stage2() -> None:
        fresh_folder(stage2)
        _train_net(configs / "alltask.yaml", common + [
            "OUTPUT_DIR", str(stage2), "SOLVER.MAX_ITER", str(plan.stage2_iters),
            "SOLVER.CHECKPOINT_PERIOD", str(max(plan.stage2_iters // 3, 1)),
            "MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT", str(stage1 / "model_final.pth"),
            "DATASETS.TEST", "()"], flags=["--resume"])

    results_path = out / "results.json"

    def run_eval() -> None:
        from .quickstart_eval import evaluate_with_control

        results = evaluate_with_control(
            configs / "alltask.yaml", common + [
                "OUTPUT_DIR", str(out / "eval"),
                "MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT", str(stage1 / "model_final.pth"),
                "MODEL.WEIGHTS", str(stage2 / "model_final.pth")])
        results_path.write_text(json.dumps(results, indent=2))

    def run_demo() -> None:
        from .quickstart_eval import demo_pictures

        demo_pictures(configs / "alltask.yaml", common + [
            "MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT", str(stage1 / "model_final.pth"),
            "MODEL.WEIGHTS", str(stage2 / "model_final.pth")], root, out / "demo", plan.demo_images)

    step("data", root / "panoptic_detectron2" / "panoptic_val2017.json", make_world)
    step("clip", clip_path, make_clip)
    step("stage1", stage1 / "model_final.pth", run_stage1)
    step("stage2", stage2 / "model_final.pth", run_stage2)
    step("eval", results_path, run_eval)
    step("demo", out / "demo" / "index.txt", run_demo)
    if results_path.exists():
        from .quickstart_eval import format_table

        print(format_table(json.loads(results_path.read_text())))
    if (out / "demo").exists():
        print(f"\nDemo pictures: {out / 'demo'}")
    if timings:
        print("Step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
