"""Build the compiled deformable-attention kernels ahead of time (instead of on first use).

    python -m freeseg.layers.ms_deform_attn.build [--cpu-only] [--verbose]

Builds into ``$FREESEG_EXT_DIR`` or ``~/.cache/freeseg/ext/<torch version>``, the folder the
op loads from at run time, and prints the compiler's full error when the build fails.
"""
from __future__ import annotations

import argparse
import sys

from .extension import build, cuda_buildable, ext_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freeseg.layers.ms_deform_attn.build", description=__doc__)
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA kernels even if a GPU is there")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    args = parser.parse_args(argv)
    with_cuda = cuda_buildable() and not args.cpu_only
    print(f"building ms_deform_attn ({'CPU + CUDA' if with_cuda else 'CPU'}) in {ext_dir()} ...", flush=True)
    try:
        module = build(with_cuda, verbose=args.verbose)
    except Exception as exc:  # noqa: BLE001 - report any build failure in full, then exit non-zero
        print(f"error: ms_deform_attn build failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    import torch

    threads = module.parallel_threads(max(64, torch.get_num_threads()))  # the CPU kernels, at torch's thread count
    print(f"ok: {module.__file__} (CUDA kernels: {'yes' if module.has_cuda() else 'no'}; "
          f"CPU kernels on {threads} of {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
