"""Time per training iteration and peak memory of the all-task model (stage 2).

Configs: ``tiny`` (``configs/tiny/tiny_alltask.yaml``, 128-pixel crops, batch 2) and the
FreeSeg-sized ones (``configs/coco-stuff-164k-156/mask2former_{R50,R101c}_alltask_bs32_60k.yaml``:
Mask2Former with 100 queries, 6 deformable encoder layers, 10 decoder layers, a ViT-B/16-sized
frozen CLIP, 156 training classes) at FreeSeg's 640×640 crop with batch 1. Weights are random
(nothing is downloaded). Each mask loss is measured: FreeSeg's full-resolution focal + dice
(``focal_full``) and Mask2Former's point-sampled BCE + dice (``point_bce``,
``MODEL.MASK_FORMER.LOSS_TYPE``).

One iteration = what the engine's ``Trainer.run_step`` does: forward with the loss, backward,
gradient clipping (the config's full-model clip), AdamW step, LR step. The task is fixed to
panoptic segmentation (its targets are every segment: the largest target set) so variants are
comparable; the batch is a synthetic 640×640 scene with 3 stuff bands and 5 thing ellipses.

Each variant runs in a fresh subprocess: time = median over ``--repeats`` iterations after
``--warmup`` ones; peak memory = the process's RSS high-water mark (``ru_maxrss``, weights and
optimizer state included) and its growth over the RSS right after building (activations,
gradients, optimizer state). On CUDA (``--device cuda``) peak = ``torch.cuda.max_memory_allocated``.

    python benchmarks/train_step.py [--configs tiny R50 R101c] [--losses focal_full point_bce]
                                    [--repeats 2] [--warmup 1] [--threads 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = {
    "tiny": ("configs/tiny/tiny_alltask.yaml", 128, 2),
    "R50": ("configs/coco-stuff-164k-156/mask2former_R50_alltask_bs32_60k.yaml", 640, 1),
    "R101c": ("configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml", 640, 1),
}
PANOPTIC = "panoptic segmentation."


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synthetic_batch(size: int, batch: int, num_classes: int, seed: int = 0) -> list[dict]:
    """``batch`` samples following the mapper contract, with all three tasks' targets."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for _ in range(batch):
        masks, classes = [], []
        bands = torch.linspace(0, size, 4).long()
        for i in range(3):  # stuff bands, top to bottom
            m = (ys >= bands[i]) & (ys < bands[i + 1])
            masks.append(m)
            classes.append(int(torch.randint(num_classes, (1,), generator=g)))
        things = []
        for _ in range(5):  # thing ellipses drawn over the bands
            cy, cx = (torch.rand(2, generator=g) * size * 0.8 + size * 0.1).tolist()
            ry, rx = (torch.rand(2, generator=g) * size * 0.15 + size * 0.05).tolist()
            m = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
            things.append((m, int(torch.randint(num_classes, (1,), generator=g))))
        for m, _ in things:
            masks = [mm & ~m for mm in masks]
        pan_masks = masks + [m for m, _ in things]
        pan_classes = classes + [c for _, c in things]

        def target(ms, cs):
            return {"gt_classes": torch.tensor(cs, dtype=torch.int64), "gt_masks": torch.stack(ms)}

        out.append({
            "image": torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8),
            "height": size, "width": size, "file_name": "synthetic.png", "image_id": 0,
            "sem_instances": target(masks, classes),
            "ins_instances": target([m for m, _ in things], [c for _, c in things]),
            "pan_instances": target(pan_masks, pan_classes),
        })
    return out


def run_one(config: str, loss: str, args: argparse.Namespace) -> dict:
    """Measure one (config, loss) in *this* process."""
    import torch

    from freeseg import build_model, get_cfg
    from freeseg.engine.lr_scheduler import build_lr_scheduler
    from freeseg.engine.optimizer import build_grad_clipper, build_optimizer
    from freeseg.engine.train_loop import Trainer

    torch.set_num_threads(args.threads)
    path, size, batch = CONFIGS[config]
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / path))
    cfg.merge_from_list([
        "MODEL.DEVICE", args.device, "MODEL.WEIGHTS", "", "MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", "random",
        "MODEL.MASK_FORMER.LOSS_TYPE", loss, "INPUT.TASK_NAME", [PANOPTIC],
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL", args.impl,
    ])
    if config == "tiny":
        cfg.merge_from_list(["MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", args.tiny_clip])
    torch.manual_seed(0)
    model = build_model(cfg)
    k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    model.set_vocabulary([f"class {i}" for i in range(k)])
    data = synthetic_batch(size, batch, k)
    optimizer = build_optimizer(cfg, model)
    loader = itertools.repeat(data)  # the same batch every iteration: no data loading in the timing
    trainer = Trainer(model, loader, optimizer, scheduler=build_lr_scheduler(cfg, optimizer),
                      grad_clipper=build_grad_clipper(cfg))
    trainer._data_iter = loader
    model.train()
    rss_built = _rss_mib()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.repeats):
        t0 = time.perf_counter()
        trainer.iter = i
        trainer.run_step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    result = {
        "config": config, "loss": loss, "crop": size, "batch": batch,
        "s_per_iter": statistics.median(times), "all_s": [round(t, 3) for t in times],
        "total_loss": float(trainer.storage.history("total_loss")[-1]),
        "trainable_M": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    if args.device == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_rss_mib"] = _peak_rss_mib()
        result["growth_mib"] = _peak_rss_mib() - rss_built
    return result


def _tiny_clip(tmp: Path) -> str:
    import torch

    from freeseg.modeling.clip import ClipArch, build_clip_from_arch

    path = tmp / "tiny_clip_64.pt"
    if not path.exists():
        torch.manual_seed(0)
        arch = ClipArch(embed_dim=64, vision_layers=1, vision_width=64, vision_patch_size=16, image_size=224,
                        context_length=77, vocab_size=49408, text_width=64, text_layers=1)
        torch.save(build_clip_from_arch(arch).state_dict(), path)
    return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "R50", "R101c"], choices=sorted(CONFIGS))
    p.add_argument("--losses", nargs="+", default=["focal_full", "point_bce"], choices=["focal_full", "point_bce"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--impl", default="auto", help="MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL")
    p.add_argument("--tiny-clip", default="")
    p.add_argument("--worker", nargs=2, metavar=("CONFIG", "LOSS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_one(args.worker[0], args.worker[1], args)), flush=True)
        return
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "freeseg_bench"
    tmp.mkdir(parents=True, exist_ok=True)
    if "tiny" in args.configs and not args.tiny_clip:
        args.tiny_clip = _tiny_clip(tmp)
    import torch

    print(f"# train step, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} threads, device {args.device}, torch {torch.__version__}", flush=True)
    rows = []
    for config in args.configs:
        for loss in args.losses:
            cmd = [sys.executable, __file__, "--worker", config, loss, "--repeats", str(args.repeats),
                   "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device,
                   "--impl", args.impl, "--tiny-clip", args.tiny_clip]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{config}/{loss} failed:\n{proc.stderr[-2000:]}", flush=True)
                continue
            row = json.loads(line[0][len("RESULT "):])
            rows.append(row)
            mem = (f"peak {row['peak_mib']:.0f} MiB" if "peak_mib" in row else
                   f"peak RSS {row['peak_rss_mib']:.0f} MiB (+{row['growth_mib']:.0f} over the built model)")
            print(f"{config:6s} {loss:10s} {row['crop']}px x{row['batch']}: {row['s_per_iter']:.2f} s/iter "
                  f"{row['all_s']}  {mem}  ({row['trainable_M']:.1f}M trainable / {row['params_M']:.1f}M)", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
