"""Inference speed and peak memory of the FreeSeg-sized model on CPU, with a Mask2Former peer.

Models: FreeSeg's own configs (``configs/coco-stuff-164k-156/mask2former_{R50,R101c}_alltask_bs32_60k.yaml``:
Mask2Former with 100 queries, 6 deformable encoder layers, 9 decoder layers, plus a ViT-B/16
CLIP), random weights (nothing is downloaded), the 171 COCO-Stuff class names, one photo
(scikit-image ``coffee``) resized to 640 short side (640x960), batch 1, ``--threads`` threads.

Variants, all timed in one process and interleaved round-robin (so that load from other
processes hits them alike; medians are reported):
- ``semantic`` / ``all3``: only the semantic task, or semantic + instance + panoptic;
- ``no panoptic pruning``: all three tasks with every panoptic region through CLIP (the model
  skips the regions of queries that cannot pass the panoptic threshold; with random weights
  that is all of them, so this variant is what a trained model's cost approaches);
- ``cpu`` / ``pytorch``: the compiled deformable-attention op or the grid_sample path
  (``MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL``);
- ``fast``: ``MODEL.CLIP_ADAPTER.REGION_TOPK`` = ``--topk`` (only the best k queries' regions
  go through CLIP); its agreement with the exact path is measured on the same image;
- ``bf16``: ``MODEL.CLIP_ADAPTER.REGION_DTYPE bfloat16`` (regions through a bf16 copy of CLIP's
  image tower), alone and with the fast mode; agreement measured likewise;
- ``amp``: ``TEST.AMP.ENABLED`` (backbone, pixel decoder and mask decoder under bf16 autocast),
  with the fast mode and bf16 regions (the fastest setting), and for the class-agnostic part;
- ``masks``: the class-agnostic part (backbone, pixel decoder, text-conditioned decoder; no
  CLIP regions, no post-processing);
- ``peer``: Hugging Face transformers' ``Mask2FormerForUniversalSegmentation`` with a ResNet-50
  backbone and the same sizes (100 queries, 6 encoder / 10 decoder layers, 256 channels),
  random weights from a config, forward pass only (its class-agnostic equivalent); also under
  bf16 autocast, to compare like with like against ``masks cpu amp``.
Text features are computed once per run (cached by the CLIP adapter) and reported apart.

Peak memory (``--memory``): one subprocess per variant builds the model, segments the image
once and reports its RSS high-water mark (``ru_maxrss``: weights included) and the growth
over the RSS right after building (activations and workspace).

    python benchmarks/inference.py [--backbones R50 R101c] [--repeats 3] [--threads 2] [--topk 10] [--memory]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = {
    "R50": "configs/coco-stuff-164k-156/mask2former_R50_alltask_bs32_60k.yaml",
    "R101c": "configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml",
}
ANCHOR = {"semantic": (37.0, 40.0), "all3": (123.0, 146.0)}  # original FreeSeg, R101c, 2 threads, this CPU
SEM, INS, PAN = "semantic segmentation.", "instance segmentation.", "panoptic segmentation."


def coco_stuff_vocabulary() -> tuple[list[str], list[int]]:
    data = json.loads((REPO / "freeseg/data/builtin/classes/coco_stuff_171.json").read_text())
    cats = data["categories"]
    return [c["name"] for c in cats], [int(c["isthing"]) for c in cats]


def test_image(short_side: int) -> torch.Tensor:
    from PIL import Image
    from skimage import data as skdata

    img = Image.fromarray(skdata.coffee())
    w, h = img.size
    scale = short_side / min(h, w)
    img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))


def build_ours(backbone: str, short_side: int) -> torch.nn.Module:
    from freeseg import build_model, get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / CONFIGS[backbone]))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", short_side,
                         "MODEL.CLIP_ADAPTER.CLIP_WEIGHTS", "random"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    names, things = coco_stuff_vocabulary()
    model.set_vocabulary(names, None, things)
    return model


def build_peer() -> torch.nn.Module:
    try:
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig
    except ImportError:
        sys.exit("the Mask2Former peer needs transformers: pip install -e '.[bench]', or pass --no-peer")

    backbone = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck",
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, use_pretrained_backbone=False, num_labels=171,
                               num_queries=100, encoder_layers=6, decoder_layers=10, hidden_dim=256,
                               feature_size=256, mask_feature_size=256)
    torch.manual_seed(0)
    return Mask2FormerForUniversalSegmentation(config).eval()


def set_impl(model: torch.nn.Module, impl: str) -> None:
    from freeseg.layers.ms_deform_attn import MSDeformAttn

    for m in model.modules():
        if isinstance(m, MSDeformAttn):
            m.impl = impl


def configure(model: torch.nn.Module, impl: str, tasks: str, topk: int, dtype: str, amp: bool = False) -> None:
    set_impl(model, impl)
    model.inference_dtype = torch.bfloat16 if amp else None
    model.eval_tasks = [SEM] if tasks == "semantic" else [SEM, INS, PAN]
    model.region_topk = topk
    model.clip_adapter.region_dtype = dtype


def ours_runner(model: torch.nn.Module, image: torch.Tensor, impl: str, tasks: str, topk: int,
                dtype: str = "float32", amp: bool = False) -> Callable[[], Any]:
    sample = {"image": image, "height": image.shape[1], "width": image.shape[2]}

    def run() -> Any:
        configure(model, impl, tasks, topk, dtype, amp)
        return model([sample])[0]

    return run


def unpruned_runner(model: torch.nn.Module, image: torch.Tensor) -> Callable[[], Any]:
    """All three tasks with every panoptic region through CLIP (the exact per-task scores,
    as ``predict_tasks`` returns them), post-processed like the model does."""
    from freeseg.modeling.meta_arch.outputs import postprocess_image

    sample = {"image": image, "height": image.shape[1], "width": image.shape[2]}

    def run() -> Any:
        configure(model, "cpu", "all3", 0, "float32")
        tasks = model.predict_tasks([sample])[0]
        return postprocess_image(tasks, tuple(image.shape[1:]), model.vocabulary, model.thresholds)

    return run


def masks_runner(model: torch.nn.Module, image: torch.Tensor, impl: str, amp: bool = False) -> Callable[[], Any]:
    """Backbone + pixel decoder + one text-conditioned decoder pass (text features cached), as
    ``predict_tasks`` runs them (under autocast with ``amp``)."""
    names = list(model.vocabulary.class_names)

    @torch.no_grad()
    def run() -> Any:
        set_impl(model, impl)
        model.inference_dtype = torch.bfloat16 if amp else None
        images, _ = model.preprocess([{"image": image}])
        text = model.clip_adapter.text_features(names, SEM)
        with model._network_autocast():
            encoded = model.sem_seg_head.encode(model.backbone(images))
            return model.sem_seg_head.decode(encoded, text)["pred_masks"].float()

    return run


def peer_runner(peer: torch.nn.Module, image: torch.Tensor, amp: bool = False) -> Callable[[], Any]:
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    h, w = image.shape[1:]
    pixels = torch.nn.functional.pad((image.float() - mean) / std, (0, -w % 32, 0, -h % 32))[None]

    @torch.no_grad()
    def run() -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            return peer(pixel_values=pixels).masks_queries_logits.float()

    return run


def semantic_agreement(exact: torch.Tensor, fast: torch.Tensor) -> tuple[float, float]:
    """(pixel agreement, mean IoU over classes present in either) of the argmax label maps."""
    a, b = exact.argmax(0), fast.argmax(0)
    ious = []
    for k in torch.unique(torch.cat([a.flatten(), b.flatten()])):
        inter = ((a == k) & (b == k)).sum().item()
        union = ((a == k) | (b == k)).sum().item()
        ious.append(inter / union)
    return float((a == b).float().mean()), float(np.mean(ious))


def setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.malloc == "freeseg":  # what the freeseg commands do (freeseg.utils.allocator)
        from freeseg.utils.allocator import keep_freed_memory

        keep_freed_memory()


def timing(args: argparse.Namespace) -> None:
    setup(args)
    image = test_image(args.short_side)
    runners: dict[str, Callable[[], Any]] = {}
    text_s: dict[str, float] = {}
    for bb in args.backbones:
        model = build_ours(bb, args.short_side)
        start = time.perf_counter()
        all_tasks = not args.only or any("all3" in o for o in args.only)
        with torch.no_grad():  # as in inference (the prompts are parameters)
            for task in (SEM, INS, PAN) if all_tasks else (SEM,):
                model.clip_adapter.text_features(list(model.vocabulary.class_names), task)
        text_s[bb] = time.perf_counter() - start
        for impl in ("cpu", "pytorch"):
            for tasks in ("semantic", "all3"):
                runners[f"{bb} {tasks} {impl}"] = ours_runner(model, image, impl, tasks, 0)
        runners[f"{bb} all3 cpu, no panoptic pruning"] = unpruned_runner(model, image)
        for tasks in ("semantic", "all3"):
            runners[f"{bb} {tasks} cpu bf16"] = ours_runner(model, image, "cpu", tasks, 0, "bfloat16")
            runners[f"{bb} {tasks} cpu fast(k={args.topk})"] = ours_runner(model, image, "cpu", tasks, args.topk)
            runners[f"{bb} {tasks} cpu fast(k={args.topk}) bf16"] = ours_runner(
                model, image, "cpu", tasks, args.topk, "bfloat16")
            runners[f"{bb} {tasks} cpu fast(k={args.topk}) bf16 amp"] = ours_runner(
                model, image, "cpu", tasks, args.topk, "bfloat16", amp=True)
        runners[f"{bb} masks cpu"] = masks_runner(model, image, "cpu")
        runners[f"{bb} masks pytorch"] = masks_runner(model, image, "pytorch")
        runners[f"{bb} masks cpu amp"] = masks_runner(model, image, "cpu", amp=True)
    if not args.no_peer:
        peer = build_peer()
        runners["peer HF Mask2Former R50 (forward)"] = peer_runner(peer, image)
        runners["peer HF Mask2Former R50 (forward) bf16 amp"] = peer_runner(peer, image, amp=True)
    if args.only:
        runners = {k: v for k, v in runners.items() if any(o in k for o in args.only) or k.startswith("peer")}
    # warm-up: the first forward of each model and kernel pays one-off costs (extension load,
    # allocator growth); one class-agnostic pass per backbone and kernel covers them, and is
    # cheaper than a full untimed round of every variant
    for name, run in runners.items():
        if " masks " in name or name.startswith("peer"):
            run()
    times: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    last: dict[str, Any] = {}
    for round_ in range(args.repeats):
        for name, run in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            last[name] = run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            print(f"round {round_} {name}: {times[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} s CPU, "
                  f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    report(args, image, times, cpu, last, text_s)


def report(args, image, times, cpu, last, text_s) -> None:
    # On a shared machine wall time depends on the others' load; CPU time / threads is what the
    # wall time would be on an idle machine if both threads stayed busy (a lower bound). The
    # ratios to the anchor use the wall time (conservative) and the idle estimate.
    med = {k: statistics.median(v) for k, v in times.items()}
    idle = {k: statistics.median(v) / args.threads for k, v in cpu.items()}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {args.threads} threads; load average now {os.getloadavg()}")
    print(f"input {tuple(image.shape[1:])}, 171 classes, 100 queries, batch 1, median of {args.repeats}, "
          f"malloc {args.malloc}")
    peer_name = "peer HF Mask2Former R50 (forward)"
    print(f"\n{'variant':<46}{'wall s':>8}{'CPU s/thr':>10}  ratio (wall; idle estimate)")
    for name, t in med.items():
        ratio, e = "", idle[name]
        tasks = "semantic" if " semantic " in name else "all3" if " all3 " in name else ""
        if tasks:
            lo, hi = ANCHOR[tasks]
            ratio = f"{t / hi:.2f}-{t / lo:.2f}x; {e / hi:.2f}-{e / lo:.2f}x of original FreeSeg ({lo:.0f}-{hi:.0f} s)"
        elif " masks " in name and peer_name + (" bf16 amp" if name.endswith(" amp") else "") in med:
            other = peer_name + (" bf16 amp" if name.endswith(" amp") else "")  # same precision
            which = " under bf16 autocast" if other != peer_name else ""
            ratio = f"{t / med[other]:.2f}x; {e / idle[other]:.2f}x of the peer{which}"
        print(f"{name:<46}{t:>8.2f}{e:>10.2f}  {ratio}")
    for bb, t in text_s.items():
        print(f"{bb}: text features for 171 classes (all tasks needed), once per run: {t:.2f} s wall")
    print("\nexactness (same image; with random weights the label maps of the settings that change "
          "results say little about accuracy: benchmarks/fast_modes_accuracy.py measures that):")
    for bb in args.backbones:
        def out(name: str) -> Any:
            return last.get(f"{bb} {name}")
        if out("semantic cpu") is not None and out("semantic pytorch") is not None:
            d_impl = (out("semantic cpu")["sem_seg"] - out("semantic pytorch")["sem_seg"]).abs().max().item()
            print(f"  {bb}: sem_seg, compiled op vs pytorch path: max |diff| {d_impl:.2e}")
        if out("all3 cpu") is not None and out("all3 pytorch") is not None:
            pan_c, pan_p = out("all3 cpu")["panoptic_seg"], out("all3 pytorch")["panoptic_seg"]
            inst_c, inst_p = out("all3 cpu")["instances"], out("all3 pytorch")["instances"]
            print(f"  {bb}: compiled vs pytorch: panoptic ids equal {torch.equal(pan_c[0], pan_p[0])}, "
                  f"instance masks equal {torch.equal(inst_c['pred_masks'], inst_p['pred_masks'])}")
        if out("all3 cpu") is not None and out("all3 cpu, no panoptic pruning") is not None:
            a, b = out("all3 cpu")["panoptic_seg"], out("all3 cpu, no panoptic pruning")["panoptic_seg"]
            print(f"  {bb}: panoptic with vs without skipping hopeless regions: ids equal {torch.equal(a[0], b[0])}, "
                  f"segments equal {a[1] == b[1]} ({len(a[1])} segments; with random weights no query can pass "
                  f"the threshold, so every panoptic region is skipped)")
        if out("semantic cpu") is not None and out("all3 cpu") is not None:
            print(f"  {bb}: semantic-only sem_seg == all-task sem_seg: "
                  f"{torch.equal(out('semantic cpu')['sem_seg'], out('all3 cpu')['sem_seg'])}")
        if out("masks cpu") is not None and out("masks pytorch") is not None:
            d = (out("masks cpu") - out("masks pytorch")).abs().max().item()
            print(f"  {bb}: mask logits, compiled op vs pytorch path: max |diff| {d:.2e}")
        if out("masks cpu") is not None and out("masks cpu amp") is not None:
            a, b = out("masks cpu"), out("masks cpu amp")
            print(f"  {bb}: mask logits under TEST.AMP vs fp32: max |diff| {(a - b).abs().max().item():.2e} "
                  f"(values up to {a.abs().max().item():.1f}), mask pixels > 0 agreeing "
                  f"{((a > 0) == (b > 0)).float().mean().item():.4f}")
        for mode in ("bf16", f"fast(k={args.topk})", f"fast(k={args.topk}) bf16", f"fast(k={args.topk}) bf16 amp"):
            fast = out(f"semantic cpu {mode}")
            if out("semantic cpu") is not None and fast is not None:
                acc, miou = semantic_agreement(out("semantic cpu")["sem_seg"], fast["sem_seg"])
                print(f"  {bb}: {mode} vs exact: semantic pixel agreement {acc:.4f}, mIoU vs exact {miou:.4f}")


def memory_worker(spec: str, args: argparse.Namespace) -> None:
    setup(args)
    image = test_image(args.short_side)
    if spec == "peer":
        run = peer_runner(build_peer(), image)
    else:
        bb, tasks, impl, topk, dtype, amp = spec.split(":")
        model = build_ours(bb, args.short_side)
        run = ours_runner(model, image, impl, tasks, int(topk), dtype, amp == "amp")
    after_build = _rss_now_mb()
    run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"spec": spec, "peak_rss_mb": peak, "after_build_mb": after_build}))


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory(args: argparse.Namespace) -> None:
    specs = [f"{bb}:{t}:{impl}:0:float32:fp32" for bb in args.backbones for t in ("semantic", "all3")
             for impl in ("cpu", "pytorch")]
    specs += [f"{bb}:{t}:cpu:{k}:{d}:{a}" for bb in args.backbones for t in ("semantic", "all3")
              for k, d, a in ((0, "bfloat16", "fp32"), (args.topk, "float32", "fp32"), (args.topk, "bfloat16", "amp"))]
    if args.only:
        specs = [s for s in specs if any(o in s for o in args.only)]
    specs += [] if args.no_peer else ["peer"]
    print(f"\n{'variant (one process each)':<38}{'peak RSS MB':>12}{'growth MB':>11}")
    for spec in specs:
        cmd = [sys.executable, __file__, "--worker", spec, "--threads", str(args.threads), "--short-side",
               str(args.short_side), "--malloc", args.malloc]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        data = json.loads(res.stdout.strip().splitlines()[-1])
        growth = data["peak_rss_mb"] - data["after_build_mb"]
        print(f"{spec:<38}{data['peak_rss_mb']:>12.0f}{growth:>11.0f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["R50", "R101c"], choices=sorted(CONFIGS))
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (after one class-agnostic warm-up pass)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--short-side", type=int, default=640)
    p.add_argument("--topk", type=int, default=8, help="REGION_TOPK of the fast mode (demo --fast: 8)")
    p.add_argument("--only", nargs="+", default=[], help="time only variants whose name contains one of these")
    p.add_argument("--no-peer", action="store_true", help="skip the transformers peer")
    p.add_argument("--malloc", choices=["freeseg", "default"], default="freeseg",
                   help="freeseg: glibc keeps freed memory, as the freeseg commands set it (for every model in "
                        "the process, the peer too); default: glibc's defaults")
    p.add_argument("--memory", action="store_true", help="peak memory per variant (subprocesses) instead of timing")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        memory_worker(args.worker, args)
    elif args.memory:
        memory(args)
    else:
        timing(args)


if __name__ == "__main__":
    main()
