"""Convert a released FreeSeg checkpoint (detectron2 ``{"model": ..., "optimizer": ...}``) into a
plain weights file for this project, and check it against a config's model by name.

Our module and parameter names are FreeSeg's, so nothing is renamed: the tool drops the
optimizer/scheduler state (smaller file, loads with ``weights_only=True``), stores fp32 tensors,
and, with ``--config``, builds that model and reports missing/unexpected keys and shape
mismatches. Everything is checked before the output is written, and it is written to a temporary
file that is then renamed, so a failure never leaves a partial or overwritten file. Usage::

    python tools/convert_freeseg_checkpoint.py model_final.pth out.pth [--config cfg.yaml]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch


def convert(state: dict) -> dict[str, torch.Tensor]:
    """The model tensors of a detectron2/FreeSeg checkpoint, fp32, original names."""
    from freeseg.engine.weights import extract_state_dict

    return {k: (v.float() if v.is_floating_point() else v) for k, v in extract_state_dict(state).items()}


def check_paths(src: str, dst: str) -> None:
    """FreeSegError unless ``src`` is a file and ``dst`` a new name for a file next to it."""
    from freeseg.utils.errors import FreeSegError, missing_file

    if not os.path.isfile(src):
        raise missing_file(src, "source checkpoint", "Give the FreeSeg model_final.pth to convert.")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise FreeSegError(
            f"{dst} is the source checkpoint itself: converting in place would drop its optimizer state "
            "and iteration; give another output file"
        )
    if os.path.isdir(dst):
        raise FreeSegError(f"{dst} is a folder; give the output file's name, e.g. {os.path.join(dst, 'weights.pth')}")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise FreeSegError(f"the output's folder {folder} does not exist; create it first")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="FreeSeg checkpoint (model_final.pth)")
    parser.add_argument("dst", help="output weights file")
    parser.add_argument("--config", help="config whose model the weights must fit (reports by name)")
    args = parser.parse_args(argv)

    import freeseg
    from freeseg.engine.checkpoint import atomic_save
    from freeseg.engine.weights import load_state_dict_checked, read_weights_file, to_model_names
    from freeseg.utils.errors import FreeSegError

    try:
        check_paths(args.src, args.dst)
        model = None
        if args.config:  # a typo in the config fails before anything is read or written
            cfg = freeseg.get_cfg()
            cfg.merge_from_file(args.config)
            cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
            model = freeseg.build_model(cfg)
        weights = convert(read_weights_file(args.src))
        if not weights:
            raise FreeSegError(f"{args.src} holds no tensors; give a FreeSeg checkpoint (model_final.pth)")
        if model is not None:  # shape mismatches are an error here, before writing
            missing, unexpected = load_state_dict_checked(model, to_model_names(weights, model), args.src)
        atomic_save({"model": weights}, args.dst)
        print(f"wrote {len(weights)} tensors to {args.dst}")
    except (FreeSegError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if model is None:
        return 0
    for name in missing:
        print(f"missing in checkpoint: {name}")
    for name in unexpected:
        print(f"not in model: {name}")
    print(f"{len(missing)} missing, {len(unexpected)} unexpected")
    return 1 if missing or unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
