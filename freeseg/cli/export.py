"""``freeseg export``: the class-agnostic network of a trained model as an ONNX file.

    freeseg export --config-file configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml \
        --output freeseg.onnx --size 640 640 MODEL.WEIGHTS weights/model_final.pth

Writes ``freeseg.onnx`` (:class:`~freeseg.modeling.meta_arch.mask_network.MaskNetwork`: inputs
``image`` [1, 3, H, W] and ``text`` [K + 1, D], outputs ``logits`` [1, Q, K + 1] and ``masks``
[1, Q, H / 4, W / 4]), ``freeseg.npz`` (the text features of the vocabulary for each task the
model was trained for, so the file runs without CLIP's text tower) and ``freeseg.json`` (sizes,
class names, padding value). Then it runs the file with onnxruntime, when installed, on a random
image and compares it with PyTorch.

The deformable attention is exported through its PyTorch path (the compiled kernels are no ONNX
operators), and the graph is traced at one image size: the levels' sizes become constants, so
images must be resized and padded to ``--size`` (the vocabulary size K may vary). PyTorch's
torch.export-based exporter cannot trace the per-level shapes as symbols yet; the TorchScript-
based one (``dynamo=False``) is used.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import warnings
from typing import Any, Sequence

import numpy as np

from ..utils.errors import FreeSegError

_TOLERANCE = {"logits": 1e-2, "masks": 1e-3}  # float32 reorderings: measured ~2e-4 and ~3e-5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="freeseg export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the config the model was trained with")
    p.add_argument("--output", required=True, help="the .onnx file to write (.npz and .json beside it)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="input size of the graph (default: INPUT.MIN_SIZE_TEST square, rounded up "
                        "to the size divisibility)")
    p.add_argument("--vocabulary", default=None,
                   help="class names (comma-separated, or a text file) for the .npz text features; "
                        "default: the config's test data set classes")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS w.pth")
    return p


def export_size(cfg: Any, size: Sequence[int] | None) -> tuple[int, int]:
    """(H, W) of the graph's image input: ``size`` or INPUT.MIN_SIZE_TEST square, as multiples of
    MODEL.MASK_FORMER.SIZE_DIVISIBILITY (an error for other sizes)."""
    d = max(int(cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY), 32)  # the backbone's deepest stride, at least
    if size is None:
        side = int(cfg.INPUT.MIN_SIZE_TEST)
        side = -(-side // d) * d
        return side, side
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0 or h % d or w % d:
        raise FreeSegError(f"--size {h} {w}: both must be positive multiples of {d} "
                           "(MODEL.MASK_FORMER.SIZE_DIVISIBILITY and the backbone's stride)")
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from ..config import get_cfg
    from ..engine.weights import load_trained_weights, trained_weights_path
    from ..modeling import build_model
    from ..modeling.clip.build import configured_clip_weights
    from ..modeling.meta_arch.mask_network import MaskNetwork
    from .demo import resolve_vocabulary

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if importlib.util.find_spec("onnx") is None:
        raise FreeSegError("freeseg export needs the onnx package: pip install -e '.[export]' (onnx, onnxruntime)")
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
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with warnings.catch_warnings():
        # the tracer's notes on shapes read as Python numbers: they are the constants meant here
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (image, text), args.output, dynamo=False, opset_version=args.opset,
                          input_names=["image", "text"], output_names=["logits", "masks"],
                          dynamic_axes={"text": {0: "classes"}, "logits": {2: "classes"}})
    stem = args.output[: -len(".onnx")]
    np.savez(stem + ".npz", **{task: t.numpy() for task, t in texts.items()})
    info = {"image_size": [h, w], "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
            "queries": int(model.sem_seg_head.predictor.num_queries), "class_names": names,
            "trainable_flag": vocabulary.trainable_flag and list(vocabulary.trainable_flag),
            "tasks": list(texts), "weights": weights, "config_file": args.config_file}
    with open(stem + ".json", "w") as f:
        json.dump(info, f, indent=2)
    print(f"wrote {args.output} ({h}x{w} input), {stem}.npz and {stem}.json")
    check = verify(args.output, network, image, text)
    print(check)
    return 0


def verify(path: str, network: Any, image: Any, text: Any) -> str:
    """Run the ONNX file with onnxruntime and compare with PyTorch; a line saying what was found
    (FreeSegError where they disagree)."""
    import torch

    try:
        import onnxruntime
    except ImportError:
        return "not checked: onnxruntime is not installed (pip install onnxruntime)"
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image.numpy(), "text": text.numpy()})
    with torch.no_grad():
        expected = network(image, text)
    diffs = {name: float(np.abs(g - e.numpy()).max()) for name, g, e in zip(("logits", "masks"), got, expected)}
    bad = [n for n, d in diffs.items() if not d <= _TOLERANCE[n]]
    found = ", ".join(f"{n} {d:.1e}" for n, d in diffs.items())
    if bad:
        raise FreeSegError(f"the ONNX file {path} computes other values than PyTorch (max differences: {found}); "
                           "please report this with the config")
    return f"onnxruntime matches PyTorch: max differences {found}"
