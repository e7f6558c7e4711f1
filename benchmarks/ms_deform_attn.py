"""Speed and peak memory of the deformable-attention implementations on FreeSeg's pixel-decoder shapes.

640x640 input -> levels 80x80, 40x40, 20x20 (S = Lq = 8400), 8 heads of 32 channels, 3 levels,
4 points: one encoder layer's sampling. Times forward and forward+backward of each path
(PyTorch grid_sample, compiled CPU, and compiled CUDA / PyTorch on CUDA when a GPU is there),
reports the median of ``--repeats`` runs and the ratio to the PyTorch path on the same device.

    python benchmarks/ms_deform_attn.py [--batch 1 4] [--repeats 5] [--threads N]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from freeseg.layers.ms_deform_attn import compiled_available, ms_deform_attn  # noqa: E402

LEVELS = ((80, 80), (40, 40), (20, 20))
HEADS, HEAD_DIM, POINTS = 8, 32, 4


def make_inputs(
    batch: int, device: torch.device, seed: int = 0, levels: tuple[tuple[int, int], ...] = LEVELS
) -> tuple[torch.Tensor, ...]:
    """value [N,S,H,D], shapes [L,2], starts [L], locations [N,Lq,H,L,P,2], weights [N,Lq,H,L,P]."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    s = int(areas.sum())
    n_levels = len(levels)
    value = torch.randn(batch, s, HEADS, HEAD_DIM, generator=gen)
    # As in the pixel-decoder encoder: each query's reference point is its own pixel centre
    # (normalised, the same on every level), and the learned offsets are a few pixels of each
    # level; uniformly random locations would instead measure cache misses only.
    centres = []
    for h, w in levels:
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        centres.append(torch.stack([xs.flatten(), ys.flatten()], -1))
    reference = torch.cat(centres)[None, :, None, None, None, :]  # 1, S, 1, 1, 1, 2
    level_size = shapes.flip(-1).to(torch.float32)[None, None, None, :, None, :]  # (w, h) per level
    offsets = torch.randn(batch, s, HEADS, n_levels, POINTS, 2, generator=gen) * 2.0
    locations = reference + offsets / level_size
    weights = torch.rand(batch, s, HEADS, n_levels * POINTS, generator=gen).softmax(-1)
    weights = weights.view(batch, s, HEADS, n_levels, POINTS)
    return tuple(t.to(device) for t in (value, shapes, starts, locations, weights))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median wall time in ms of ``fn`` after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_memory_mb(impl: str, batch: int, device: torch.device) -> float:
    """Peak extra memory of one forward+backward, beyond the inputs.

    CUDA: the caching allocator's peak. CPU has no allocator statistics, so one call runs in a
    fresh subprocess and we report its growth in peak resident memory (Linux /proc).
    """
    if device.type == "cuda":
        inputs = make_inputs(batch, device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        forward_backward_once(impl, inputs)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    cmd = [sys.executable, __file__, "--memory-probe", impl, str(batch), "--threads", str(torch.get_num_threads())]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:  # e.g. no /proc (not Linux): report no number rather than fail
        return float("nan")
    return float(result.stdout.strip().splitlines()[-1])


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(impl: str, batch: int) -> None:
    """Subprocess side of :func:`peak_memory_mb` on CPU: print the peak RSS growth in MB.

    Linux only: writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to the current RSS,
    so input creation does not count.
    """
    tiny = make_inputs(1, torch.device("cpu"), seed=1, levels=((4, 4), (2, 2), (1, 1)))
    forward_backward_once(impl, tiny)  # load the kernels, warm the allocator
    inputs = make_inputs(batch, torch.device("cpu"))
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kib("VmRSS")
    forward_backward_once(impl, inputs)
    print((_rss_kib("VmHWM") - before) / 1024)


def forward_backward_once(impl: str, inputs: tuple[torch.Tensor, ...]) -> None:
    value, shapes, starts, locations, weights = inputs
    leaves = [t.requires_grad_() for t in (value, locations, weights)]
    out = ms_deform_attn(value, shapes, starts, locations, weights, impl=impl)
    out.backward(torch.ones_like(out))
    for t in leaves:
        t.grad = None


def bench_path(impl: str, batch: int, device: torch.device, repeats: int) -> dict[str, float]:
    value, shapes, starts, locations, weights = make_inputs(batch, device)

    def forward() -> None:
        with torch.no_grad():
            ms_deform_attn(value, shapes, starts, locations, weights, impl=impl)

    def forward_backward() -> None:
        forward_backward_once(impl, (value, shapes, starts, locations, weights))

    return {
        "fwd_ms": time_call(forward, device, repeats),
        "fwd_bwd_ms": time_call(forward_backward, device, repeats),
        "peak_mb": peak_memory_mb(impl, batch, device),
    }


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--memory-probe", nargs=2, metavar=("IMPL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args.memory_probe[0], int(args.memory_probe[1]))
        return

    paths = [("pytorch", torch.device("cpu"))]
    if compiled_available("cpu"):
        paths.append(("cpu", torch.device("cpu")))
    if torch.cuda.is_available():
        paths.append(("pytorch", torch.device("cuda")))
        if compiled_available("cuda"):
            paths.append(("cuda", torch.device("cuda")))

    print(f"machine: {machine()}")
    print(f"shapes: levels {LEVELS}, heads {HEADS} x {HEAD_DIM}, points {POINTS}; median of {args.repeats}")
    header = f"{'batch':>5} {'path':<12} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MB':>9} {'fwd x':>7} {'fwd+bwd x':>10}"
    print(header)
    print("-" * len(header))
    for batch in args.batch:
        baseline: dict[str, dict[str, float]] = {}
        for impl, device in paths:
            result = bench_path(impl, batch, device, args.repeats)
            if impl == "pytorch":
                baseline[device.type] = result
            base = baseline[device.type]
            print(
                f"{batch:>5} {impl + '@' + device.type:<12} {result['fwd_ms']:>9.1f} {result['fwd_bwd_ms']:>11.1f} "
                f"{result['peak_mb']:>9.1f} {base['fwd_ms'] / result['fwd_ms']:>7.1f} "
                f"{base['fwd_bwd_ms'] / result['fwd_bwd_ms']:>10.1f}"
            )


if __name__ == "__main__":
    main()
