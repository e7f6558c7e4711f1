"""Convert a released FreeSeg checkpoint (detectron2 ``{"model": ..., "optimizer": ...}``) into a
plain weights file for this project, and check it against a config's model by name.

Our module and parameter names are FreeSeg's, so nothing is renamed: the tool drops the
optimizer/scheduler state (smaller file, loads with ``weights_only=True``), stores fp32 tensors,
and, with ``--config``, builds that model and reports missing/unexpected keys and shape
mismatches. Usage::

    python tools/convert_freeseg_checkpoint.py model_final.pth out.pth [--config cfg.yaml]
"""
from __future__ import annotations

import argparse
import sys

import torch


def convert(state: dict) -> dict[str, torch.Tensor]:
    """The model tensors of a detectron2/FreeSeg checkpoint, fp32, original names."""
    model = state.get("model", state)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in model.items() if torch.is_tensor(v)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="FreeSeg checkpoint (model_final.pth)")
    parser.add_argument("dst", help="output weights file")
    parser.add_argument("--config", help="config whose model the weights must fit (reports by name)")
    args = parser.parse_args(argv)

    from freeseg.utils.errors import FreeSegError

    try:
        state = torch.load(args.src, map_location="cpu", weights_only=True)
        weights = convert(state)
        torch.save({"model": weights}, args.dst)
        print(f"wrote {len(weights)} tensors to {args.dst}")
        if args.config:
            import freeseg

            cfg = freeseg.get_cfg()
            cfg.merge_from_file(args.config)
            cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
            missing, unexpected = freeseg.load_checkpoint(freeseg.build_model(cfg), args.dst)
            for name in missing:
                print(f"missing in checkpoint: {name}")
            for name in unexpected:
                print(f"not in model: {name}")
            print(f"{len(missing)} missing, {len(unexpected)} unexpected")
            return 1 if missing or unexpected else 0
    except (FreeSegError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
