r"""``freeseg export``: the class-agnostic network of a trained model as an ONNX file.

    freeseg export --config-file configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml \
        --output freeseg.onnx MODEL.WEIGHTS weights/model_final.pth

Writes ``freeseg.onnx`` (:class:`~freeseg.modeling.meta_arch.mask_network.MaskNetwork`: inputs
``image`` [1, 3, H, W] and ``text`` [K + 1, D], outputs ``logits`` [1, Q, K + 1] and ``masks``
[1, Q, H / 4, W / 4], for any H and W that are multiples of 32 and any K), ``freeseg.npz`` (the
text features of the vocabulary for each task the model was trained for, so the file runs without
CLIP's text tower) and ``freeseg.json`` (class names, padding value, sizes). Then it runs the file
with onnxruntime on two random images of different shapes, with two vocabulary sizes, and
compares it with PyTorch.

The export is PyTorch's torch.export-based exporter with symbolic image sizes; the deformable
attention goes through its PyTorch path (the compiled kernels are no ONNX operators).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import sys
import warnings
from typing import Any, Sequence

import numpy as np

from ..utils.errors import FreeSegError

_TOLERANCE = {"logits": 1e-2, "masks": 1e-3}  # float32 reorderings: measured ~6e-4 and ~5e-5
_MAX_SIDE = 4096


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="freeseg export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the config the model was trained with")
    p.add_argument("--output", required=True, help="the .onnx file to write (.npz and .json beside it)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="the example image size the export traces with (default: INPUT.MIN_SIZE_TEST "
                        "square, rounded up to 32); the graph takes any multiple of 32")
    p.add_argument("--vocabulary", default=None,
                   help="class names (comma-separated, or a text file) for the .npz text features; "
                        "default: the config's test data set classes")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS w.pth")
    return p


def size_multiple(cfg: Any) -> int:
    """What image sides must be multiples of: MODEL.MASK_FORMER.SIZE_DIVISIBILITY, at least the
    backbone's deepest stride (32)."""
    return max(int(cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY), 32)


def export_size(cfg: Any, size: Sequence[int] | None) -> tuple[int, int]:
    """(H, W) of the example image: ``size`` or INPUT.MIN_SIZE_TEST square, as multiples of
    :func:`size_multiple` (an error for other sizes)."""
    d = size_multiple(cfg)
    if size is None:
        side = int(cfg.INPUT.MIN_SIZE_TEST)
        side = -(-side // d) * d
        return side, side
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0 or h % d or w % d or max(h, w) > _MAX_SIDE:
        raise FreeSegError(f"--size {h} {w}: both must be positive multiples of {d} up to {_MAX_SIDE} "
                           "(MODEL.MASK_FORMER.SIZE_DIVISIBILITY and the backbone's stride)")
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from torch.nn import functional as F

    from ..config import get_cfg
    from ..engine.weights import load_trained_weights, trained_weights_path
    from ..modeling import build_model
    from ..modeling.clip.build import configured_clip_weights
    from ..modeling.meta_arch.mask_network import MaskNetwork
    from .demo import resolve_vocabulary

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise FreeSegError(f"freeseg export needs {', '.join(missing)}: pip install -e '.[export]'")
    if not os.path.isfile(args.config_file):
        raise FreeSegError(f"--config-file {args.config_file} does not exist; check the path")
    if not args.output.endswith(".onnx"):
        raise FreeSegError(f"--output {args.output}: name the file to write, ending in .onnx")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    # the graph is built on the CPU, with the deformable attention's PyTorch path
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL", "pytorch"])
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "OpenVocabulary":
        raise FreeSegError(f"MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE}; export needs a stage-2 "
                           "(OpenVocabulary) config")
    h, w = export_size(cfg, args.size)
    vocabulary = resolve_vocabulary(cfg, args.vocabulary, None)
    weights = trained_weights_path(cfg, "export")
    clip_file, clip_name = configured_clip_weights(cfg)
    model = build_model(cfg)
    load_trained_weights(model, weights, clip_file=clip_file, clip_name=clip_name, config_file=args.config_file)
    model.eval()
    names = list(vocabulary.class_names)
    model.set_vocabulary(names, vocabulary.trainable_flag, vocabulary.thing_flags)
    with torch.no_grad():
        texts = {task: model.clip_adapter.text_features(names, task) for task in model.task_names}
    network = MaskNetwork.from_model(model).eval()
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    text = next(iter(texts.values()))
    d = size_multiple(cfg)
    print(f"exporting (tracing {h}x{w}; a minute or more for FreeSeg's sizes) ...", flush=True)
    export_onnx(network, image, text, args.output, multiple=d, opset=args.opset)
    stem = args.output[: -len(".onnx")]
    np.savez(stem + ".npz", **{task: t.numpy() for task, t in texts.items()})
    info = {"size_multiple": d, "example_size": [h, w], "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
            "queries": int(model.sem_seg_head.predictor.num_queries), "class_names": names,
            "trainable_flag": vocabulary.trainable_flag and list(vocabulary.trainable_flag),
            "tasks": list(texts), "weights": weights, "config_file": args.config_file}
    with open(stem + ".json", "w") as f:
        json.dump(info, f, indent=2)
    print(f"wrote {args.output} (images of any size in multiples of {d}), {stem}.npz and {stem}.json")
    # the traced shape, and another one (sides swapped, or one step taller) with more classes
    other = (w, h) if h != w else (h + d, w)
    more = torch.cat([text[:-1], F.normalize(torch.randn(3, text.shape[1], generator=torch.Generator().manual_seed(1)),
                                             dim=-1), text[-1:]])
    print(verify(args.output, network, [(image, text), (torch.rand(1, 3, *other) * 255, more)]))
    return 0


def export_onnx(network: Any, image: Any, text: Any, path: str, *, multiple: int, opset: int) -> None:
    """Write ``network`` (a :class:`MaskNetwork`) to ``path`` through torch.export, traced on
    ``image`` / ``text``, with image sides ``multiple`` x n and the number of classes symbolic."""
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    side = torch.export.Dim  # sides as multiple * n: every level's stride then divides them
    dynamic = {"image": {2: multiple * side("rows", min=1, max=_MAX_SIDE // multiple),
                         3: multiple * side("cols", min=1, max=_MAX_SIDE // multiple)},
               "text": {0: side("classes", min=2, max=100_000)}}
    optimizer_log = logging.getLogger("onnxscript")
    level = optimizer_log.level
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as log:
        warnings.simplefilter("ignore")  # the exporter's notes on deprecated internals
        optimizer_log.setLevel(logging.ERROR)  # a line per multi-output op it does not fold
        try:
            torch.onnx.export(network, (image, text), path, dynamo=True, opset_version=opset,
                              dynamic_shapes=dynamic, output_names=["logits", "masks"])
        except Exception as e:  # noqa: BLE001 - the exporter's own error, named, with its log
            raise FreeSegError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0]}); "
                               f"exporter log: {log.getvalue()[-500:]!r}") from e
        finally:
            optimizer_log.setLevel(level)


def verify(path: str, network: Any, cases: Sequence[tuple[Any, Any]]) -> str:
    """Run the ONNX file with onnxruntime on each (image, text) and compare with PyTorch; a line
    saying what was found (FreeSegError where they disagree)."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    diffs = {"logits": 0.0, "masks": 0.0}
    for image, text in cases:
        got = session.run(None, {"image": image.numpy(), "text": text.numpy()})
        with torch.no_grad():
            expected = network(image, text)
        for name, g, e in zip(diffs, got, expected):
            if g.shape != tuple(e.shape):
                raise FreeSegError(f"the ONNX file {path} gives {name} of shape {g.shape} for an image of "
                                   f"{tuple(image.shape)}, PyTorch {tuple(e.shape)}; please report this with the config")
            diffs[name] = max(diffs[name], float(np.abs(g - e.numpy()).max()))
    found = ", ".join(f"{n} {v:.1e}" for n, v in diffs.items())
    if any(not v <= _TOLERANCE[n] for n, v in diffs.items()):
        raise FreeSegError(f"the ONNX file {path} computes other values than PyTorch (max differences: {found}); "
                           "please report this with the config")
    shapes = " and ".join("x".join(str(s) for s in image.shape[2:]) for image, _ in cases)
    return f"onnxruntime matches PyTorch on {shapes} images: max differences {found}"
