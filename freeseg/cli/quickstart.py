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
from typing import Sequence

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


class Quickstart:
    """One run's folders and steps: each step method makes the file that :meth:`markers` names
    for it, and :meth:`run` skips a step whose file exists (unless ``fresh``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ..data.world.register import world_root

        self.plan, self.fresh = Plan(args.short), args.fresh
        self.out, self.root = Path(args.output), Path(world_root(args.datasets))
        self.clip_path = Path(args.weights) / "tiny_clip.pt"
        self.stage1, self.stage2 = self.out / "stage1", self.out / "stage2"
        self.results_path = self.out / "results.json"
        self.configs = REPO / "configs" / "quickstart"
        self.common = ["MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", str(self.clip_path)]

    def markers(self) -> dict[str, Path]:
        return {"data": self.root / "panoptic_detectron2" / "panoptic_val2017.json", "clip": self.clip_path,
                "stage1": self.stage1 / "model_final.pth", "stage2": self.stage2 / "model_final.pth",
                "eval": self.results_path, "demo": self.out / "demo" / "index.txt"}

    def run(self, steps: Sequence[str]) -> dict[str, float]:
        """Run ``steps`` in the order of :data:`STEPS`; returns seconds per step run."""
        timings: dict[str, float] = {}
        for name, marker in self.markers().items():
            if name not in steps:
                continue
            if marker.exists() and not self.fresh:
                logger.info("%s: already done (%s); --fresh redoes it", name, marker)
                continue
            logger.info("=== %s ===", name)
            start = time.time()
            getattr(self, f"step_{name}")()
            timings[name] = time.time() - start
        return timings

    def _trained_model(self) -> list[str]:
        return self.common + ["MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT", str(self.stage1 / "model_final.pth"),
                              "MODEL.WEIGHTS", str(self.stage2 / "model_final.pth")]

    def _fresh_folder(self, folder: Path) -> None:
        # Training refuses to overwrite a run without --resume: an interrupted stage continues,
        # and --fresh removes the stage's folder first (it holds only this command's outputs).
        if self.fresh and folder.exists():
            shutil.rmtree(folder)

    def step_data(self) -> None:
        from ..data.world.writer import write_split

        write_split(self.root, "train", self.plan.train_images, seed=1)
        write_split(self.root, "val", self.plan.val_images, seed=2)

    def step_clip(self) -> None:
        from ..data.world.clip_pretrain import pretrain_tiny_clip

        summary = pretrain_tiny_clip(self.clip_path, num_scenes=self.plan.clip_scenes, steps=self.plan.clip_steps,
                                     batch_size=self.plan.clip_batch)
        logger.info("tiny CLIP: region accuracy seen %.1f%%, unseen %.1f%% (%.0f s)",
                    100 * summary["region_acc_seen"], 100 * summary["region_acc_unseen"], summary["seconds"])

    def step_stage1(self) -> None:
        self._fresh_folder(self.stage1)
        iters = self.plan.stage1_iters
        _train_net(self.configs / "learn_prompt.yaml", self.common + [
            "OUTPUT_DIR", str(self.stage1), "SOLVER.MAX_ITER", str(iters), "SOLVER.CHECKPOINT_PERIOD", str(iters),
            "DATASETS.TEST", "()"], flags=["--resume"])

    def step_stage2(self) -> None:
        self._fresh_folder(self.stage2)
        iters = self.plan.stage2_iters
        _train_net(self.configs / "alltask.yaml", self.common + [
            "OUTPUT_DIR", str(self.stage2), "SOLVER.MAX_ITER", str(iters),
            "SOLVER.CHECKPOINT_PERIOD", str(max(iters // 3, 1)),
            "MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT", str(self.stage1 / "model_final.pth"),
            "DATASETS.TEST", "()"], flags=["--resume"])

    def step_eval(self) -> None:
        from .quickstart_eval import evaluate_with_control

        results = evaluate_with_control(self.configs / "alltask.yaml",
                                        self._trained_model() + ["OUTPUT_DIR", str(self.out / "eval")])
        self.results_path.write_text(json.dumps(results, indent=2))

    def step_demo(self) -> None:
        from .quickstart_eval import demo_pictures

        demo_pictures(self.configs / "alltask.yaml", self._trained_model(), self.root, self.out / "demo",
                      self.plan.demo_images)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[quickstart] %(message)s")
    os.environ["DETECTRON2_DATASETS"] = args.datasets  # the child processes register from it
    run = Quickstart(args)
    timings = run.run(args.only or list(STEPS))
    if run.results_path.exists():
        from .quickstart_eval import format_table

        print(format_table(json.loads(run.results_path.read_text())))
    if (run.out / "demo").exists():
        print(f"\nDemo pictures: {run.out / 'demo'}")
    if timings:
        print("Step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
