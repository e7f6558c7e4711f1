"""The exported mask network under onnxruntime against PyTorch, on CPU.

Exports the class-agnostic network of a FreeSeg-sized model (random weights, as in
``benchmarks/inference.py``: ``freeseg export``'s graph, symbolic image size) and times, in one
process, interleaved round-robin on the same 640-short-side photo (medians reported):
- ``torch``: the model's own class-agnostic part with the compiled deformable attention
  (``benchmarks/inference.py``'s ``masks cpu``);
- ``onnxruntime``: the exported file (its deformable attention is the grid_sample path);
- ``peer``: transformers' Mask2Former R50 forward (``--no-peer`` skips it).
It also reports the export's duration and the largest mask-logit difference to PyTorch.

    python benchmarks/onnx_runtime.py [--backbone R50] [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inference as bench  # noqa: E402  (benchmarks/inference.py: models, photo, runners)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="R50", choices=sorted(bench.CONFIGS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--short-side", type=int, default=640)
    p.add_argument("--no-peer", action="store_true")
    args = p.parse_args()

    import onnxruntime

    from freeseg.cli.export import export_onnx
    from freeseg.modeling.meta_arch.mask_network import MaskNetwork
    from freeseg.utils.allocator import keep_freed_memory

    torch.set_num_threads(args.threads)
    keep_freed_memory()
    model = bench.build_ours(args.backbone, args.short_side)
    image = bench.test_image(args.short_side)
    text = model.clip_adapter.text_features(list(model.vocabulary.class_names), bench.SEM).detach()
    h, w = image.shape[1:]
    padded = model.pixel_mean.expand(3, -(-h // 32) * 32, -(-w // 32) * 32).clone()  # as the export expects
    padded[:, :h, :w] = image.float()
    network = MaskNetwork.from_model(model).eval()
    bench.set_impl(model, "pytorch")  # what ONNX can hold
    path = Path(tempfile.mkdtemp()) / "masks.onnx"
    start = time.perf_counter()
    export_onnx(network, padded[None], text, str(path), multiple=32, opset=18)
    export_s = time.perf_counter() - start

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"image": padded[None].numpy(), "text": text.numpy()}
    runners = {"torch": bench.masks_runner(model, image, "cpu"), "onnxruntime": lambda: session.run(None, feed)}
    if not args.no_peer:
        runners["peer"] = bench.peer_runner(bench.build_peer(), image)
    for run in runners.values():  # warm-up
        run()
    diff = float(np.abs(session.run(None, feed)[1][0] - runners["torch"]()[0].numpy()).max())
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)

    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; {args.backbone}, {h}x{w}")
    print(f"export: {export_s:.0f} s; mask logits, onnxruntime vs torch: max difference {diff:.1e}")
    base = statistics.median(times["torch"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<12} {med:6.2f} s  ({med / base:.2f}x torch; rounds {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
