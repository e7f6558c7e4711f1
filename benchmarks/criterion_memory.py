"""Peak memory and time of the criterion: FreeSeg's full-resolution focal vs point-sampled BCE.

Shapes are FreeSeg's training ones: 640×640 crops, 100 queries, 11 predictions (final + 10
auxiliary), 160×160 mask logits, ~10 targets per image, K = 156 classes, batch 1 and 2.
One forward + backward of the criterion (matching included) per measurement.

Memory is measured honestly for torch CPU tensors (tracemalloc does not see them): each
variant runs in a fresh subprocess; peak = the process's RSS high-water mark (``ru_maxrss``)
during forward+backward minus the RSS just before (inputs already allocated). On CUDA
(``--device cuda``) peak = ``torch.cuda.max_memory_allocated`` minus the allocation before.

Usage: python benchmarks/criterion_memory.py [--device cpu|cuda] [--repeats N] [--batches 1 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("focal_full", "point_bce")


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(variant: str, batch: int, device: str, repeats: int, seed: int = 0) -> dict:
    """Measure one variant in *this* process (called in a fresh subprocess)."""
    sys.path.insert(0, REPO)
    import torch

    from freeseg.losses import SetCriterion, build_weight_dict
    from freeseg.modeling.matcher import HungarianMatcher

    torch.manual_seed(seed)
    num_classes, queries, num_aux, mask_hw, image_hw, num_targets = 156, 100, 10, 160, 640, 10
    dev = torch.device(device)

    def outputs() -> dict:
        def one() -> dict:
            return {
                "pred_logits": torch.randn(batch, queries, num_classes + 1, device=dev, requires_grad=True),
                "pred_masks": torch.randn(batch, queries, mask_hw, mask_hw, device=dev, requires_grad=True),
            }
        out = one()
        out["aux_outputs"] = [one() for _ in range(num_aux)]
        return out

    def targets() -> list[dict]:
        result = []
        for _ in range(batch):
            # Blobs: random low-resolution noise, upsampled and thresholded, so masks look like
            # regions rather than salt and pepper.
            low = torch.randn(num_targets, 1, 20, 20, device=dev)
            masks = torch.nn.functional.interpolate(low, size=(image_hw, image_hw), mode="bilinear") > 0.8
            labels = torch.randint(num_classes, (num_targets,), device=dev)
            result.append({"labels": labels, "masks": masks[:, 0]})
        return result

    matcher_cost = "focal" if variant == "focal_full" else "point_bce"
    criterion = SetCriterion(
        num_classes=num_classes,
        matcher=HungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=5.0, mask_cost=matcher_cost),
        weight_dict=build_weight_dict(class_weight=1.0, mask_weight=20.0, dice_weight=5.0,
                                      deep_supervision=True, num_aux=num_aux),
        eos_coef=0.1,
        mask_loss=variant,
    ).to(dev)
    out, tgt = outputs(), targets()

    def step() -> None:
        losses = criterion(out, tgt)
        total = sum(losses[k] * criterion.weight_dict.get(k, 0.0) for k in losses)
        total.backward()
        for pred in [out] + out["aux_outputs"]:
            pred["pred_logits"].grad = pred["pred_masks"].grad = None

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if dev.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
        step()
        sync()
        peak = torch.cuda.max_memory_allocated() / 2**20 - before
    else:
        before = _current_rss_mib()
        step()
        peak = _peak_rss_mib() - before
    times = []
    for _ in range(max(1, repeats)):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"variant": variant, "batch": batch, "peak_mib": peak, "time_s": times[len(times) // 2]}


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs (torch {torch.__version__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the measured one")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(run_one(args._child[0], int(args._child[1]), args.device, args.repeats)))
        return
    rows = []
    for batch in args.batches:
        for variant in VARIANTS:
            # A fresh process per variant: RSS high-water marks never go down.
            cmd = [sys.executable, os.path.abspath(__file__), "--device", args.device,
                   "--repeats", str(args.repeats), "--_child", variant, str(batch)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"criterion forward+backward, 11 predictions x 100 queries, masks 160x160 vs 640x640 GT, "
          f"10 targets/image\nmachine: {machine(args.device)}")
    print(f"{'batch':>5} {'variant':>11} {'peak MiB':>9} {'time s':>8} {'mem ratio':>10} {'time ratio':>10}")
    for batch in args.batches:
        full = next(r for r in rows if r["batch"] == batch and r["variant"] == "focal_full")
        for r in (x for x in rows if x["batch"] == batch):
            print(f"{batch:>5} {r['variant']:>11} {r['peak_mib']:>9.0f} {r['time_s']:>8.3f} "
                  f"{full['peak_mib'] / max(r['peak_mib'], 1e-9):>9.2f}x {full['time_s'] / r['time_s']:>9.2f}x")
    print("ratios = focal_full / variant (higher = the variant is cheaper)")


if __name__ == "__main__":
    main()
