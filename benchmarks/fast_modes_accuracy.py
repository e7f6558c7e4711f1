"""What the speed options cost in accuracy, on the trained quickstart model.

Random weights (``benchmarks/inference.py``) say nothing about accuracy, so this evaluates the
model that ``make demo`` trains (``output/quickstart``: 24 queries, tiny CLIP, 80 validation
images of the built-in world, 14 seen / 3 unseen classes) once per mode, on all three tasks:

- exact: the default;
- ``MODEL.CLIP_ADAPTER.REGION_DTYPE bfloat16``: every region through a bf16 copy of CLIP's image tower;
- ``MODEL.CLIP_ADAPTER.REGION_TOPK k``: only the k most confident queries' regions through CLIP;
- both;
- ``TEST.AMP.ENABLED``: backbone, pixel decoder and mask decoder under bf16 autocast, alone and
  with the two above (the fastest setting).

(* seconds per image include the evaluator's own work; the tiny CLIP makes them no guide to
speed, which ``benchmarks/inference.py`` measures.)

    python benchmarks/fast_modes_accuracy.py [--run output/quickstart] [--topk 8 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLUMNS = (("sem_seg", "mIoU"), ("sem_seg", "mIoU-base"), ("sem_seg", "mIoU-unbase"), ("panoptic_seg", "PQ"),
           ("panoptic_seg", "PQ-unseen"), ("segm", "AP"), ("segm", "AP-unseen"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="output/quickstart", help="the quickstart's output folder")
    p.add_argument("--weights", default="weights/quickstart", help="where the quickstart put tiny_clip.pt")
    p.add_argument("--datasets", default="datasets", help="the quickstart's DETECTRON2_DATASETS")
    p.add_argument("--topk", type=int, nargs="+", default=[8, 4])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from freeseg.cli.quickstart_eval import _load_model
    from freeseg.data.loaders import build_test_loader
    from freeseg.engine.defaults import vocabulary_from_metadata
    from freeseg.evaluation import build_evaluator, inference_on_dataset
    from freeseg.utils.allocator import keep_freed_memory

    run, clip = Path(args.run), Path(args.weights) / "tiny_clip.pt"
    for needed in (run / "stage2" / "model_final.pth", run / "stage1" / "model_final.pth", clip):
        if not needed.exists():
            sys.exit(f"error: {needed} is missing; run `make demo` (or `freeseg quickstart`) first")
    os.environ.setdefault("DETECTRON2_DATASETS", args.datasets)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    opts = ["MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", str(clip),
            "MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT", str(run / "stage1" / "model_final.pth"),
            "MODEL.WEIGHTS", str(run / "stage2" / "model_final.pth"),
            "OUTPUT_DIR", str(run / "fast_modes")]
    cfg, model = _load_model(REPO / "configs" / "quickstart" / "alltask.yaml", opts)
    name = cfg.DATASETS.TEST[0]
    vocab = vocabulary_from_metadata(name)
    model.set_vocabulary(vocab["class_names"], vocab["trainable_flag"], vocab["thing_flags"])
    modes = [("exact", 0, "float32", None), ("REGION_DTYPE bfloat16", 0, "bfloat16", None),
             ("TEST.AMP bfloat16", 0, "float32", torch.bfloat16)]
    for k in args.topk:
        modes += [(f"REGION_TOPK {k}", k, "float32", None), (f"REGION_TOPK {k} + bfloat16", k, "bfloat16", None),
                  (f"TOPK {k} + bf16 + TEST.AMP", k, "bfloat16", torch.bfloat16)]
    print(f"{'mode':<28}" + "".join(f"{m:>13}" for _, m in COLUMNS) + f"{'s / image':>11}")
    for label, k, dtype, amp in modes:
        model.region_topk, model.clip_adapter.region_dtype, model.inference_dtype = k, dtype, amp
        folder = "_".join(label.replace("+", " ").replace(".", "_").split())
        evaluator = build_evaluator(cfg, name, str(Path(cfg.OUTPUT_DIR) / folder))
        loader = build_test_loader(cfg, name)
        start = time.perf_counter()
        results = inference_on_dataset(model, loader, evaluator)
        seconds = (time.perf_counter() - start) / len(loader)
        cells = "".join(f"{results.get(f, {}).get(m, float('nan')):>13.1f}" for f, m in COLUMNS)
        print(f"{label:<28}{cells}{seconds:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
