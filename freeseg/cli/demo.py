"""``freeseg demo`` / ``python demo.py``: segment your own images with any class names.

    freeseg demo --config-file configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml \\
        --input photos/ extra.jpg "more/*.png" --output out/ --vocabulary "person,dog,grass,sky" \\
        MODEL.WEIGHTS weights/model_final.pth

Everything that can be wrong with the set-up (vocabulary, config, weights, inputs that do not
exist, an --output that is a file) is reported before the first image; an image that cannot be
decoded or segmented is skipped with a message naming it and the error, and counted; a run that
segments nothing is an error. What is written per image is listed in
:mod:`freeseg.cli.demo_outputs`; docs/demo.md has the details.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import tempfile
from typing import Any, Iterator, Sequence

import numpy as np

from ..utils.errors import FreeSegError, missing_file
from ..utils.files import file_identity, settings_digest
from .demo_outputs import TASKS, ResultWriter, RunLog
from .predictor import DemoPredictor, DemoVocabulary

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
_PHRASES = {"semantic": "semantic segmentation.", "instance": "instance segmentation.", "panoptic": "panoptic segmentation."}
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")
_FILE_EXT = re.compile(r"\.[A-Za-z][A-Za-z0-9]{1,4}$")  # "names.txt": meant as a file, not a class name


def build_parser(prog: str = "freeseg demo") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Segment images with a trained FreeSeg model and any list of class names; "
        "writes overlay pictures, label maps, panoptic PNG + JSON and instance RLE JSON.",
        epilog="Example: %(prog)s --config-file configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml "
        "--input photo.jpg --output out/ --vocabulary 'person,dog,grass,sky' MODEL.WEIGHTS weights/model_final.pth",
    )
    p.add_argument("--config-file", default="", metavar="FILE", help="the model's config (YAML)")
    p.add_argument("--input", nargs="+", default=[], metavar="PATH",
                   help="image files, folders, globs ('photos/*.jpg') or video files (frame by frame)")
    p.add_argument("--output", default="", metavar="DIR", help="output folder (default: a new temporary folder, printed at the end)")
    p.add_argument("--vocabulary", default=None, metavar="NAMES|FILE",
                   help="comma-separated class names, or a text file with one name per line "
                   "(default: the classes of the config's first DATASETS.TEST data set)")
    p.add_argument("--stuff", default=None, metavar="NAMES",
                   help="comma-separated names of the vocabulary that are amorphous 'stuff' (sky, grass): one "
                   "panoptic segment per class, no instances (default: from the test data set where it knows "
                   "the name, else thing)")
    p.add_argument("--task", nargs="+", default=None, metavar="TASK",
                   help=f"results to produce, any of {', '.join(TASKS)} (default: semantic plus "
                   "instance/panoptic when the config enables them)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (GPU when there is one)")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="minimum score of instances and panoptic/entity segments (default 0.5)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (equal-size images only)")
    p.add_argument("--output-memory-gb", type=float, default=4.0, metavar="GB",
                   help="memory for an image's full-size outputs (default 4); larger images are post-processed at "
                        "a reduced size and their maps enlarged (nearest neighbour), with a warning")
    p.add_argument("--fast", action="store_true",
                   help="trade exactness for speed: only the 8 most confident queries' regions through CLIP, "
                   "CLIP regions and the segmentation network in bf16 (fp16 on a GPU); ~7x faster on a CPU, "
                   "results change by a few points (docs/demo.md, 'Speed'); KEY VALUE overrides still win")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every input; by default an --output folder that holds finished results of the same "
                   "settings (an interrupted run) is continued: those inputs are skipped")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="config overrides (the same as trailing KEY VALUE pairs)")
    p.add_argument("opts_trailing", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS weights/model_final.pth")
    return p


def split_inputs_and_opts(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--input a.jpg b.jpg MODEL.WEIGHTS w.pth`` -> inputs, opts: the first item that looks
    like a config key (``A.B``, upper case) and is not a file starts the overrides."""
    for i, item in enumerate(items):
        if _CONFIG_KEY.match(item) and not os.path.exists(item):
            return list(items[:i]), list(items[i:])
    return list(items), []


def parse_tasks(items: Sequence[str] | None) -> list[str] | None:
    """``--task`` values (space- or comma-separated), checked against :data:`TASKS`."""
    if items is None:
        return None
    tasks = [t.strip() for item in items for t in item.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise FreeSegError(f"--task {' '.join(items)}: choose from {', '.join(TASKS)}")
    return tasks


def parse_vocabulary(value: str) -> list[str]:
    """Names from a comma-separated list or a file (one per line, '#' comments). A value with no
    comma that looks like a path (a folder separator or a file extension) must be a file."""
    if os.path.isdir(value):
        raise FreeSegError(f"--vocabulary {value} is a folder; give a text file with one class name per line, "
                           "or comma-separated names")
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                names = [line.split("#", 1)[0].strip() for line in f]
        except UnicodeDecodeError:
            raise FreeSegError(f"vocabulary file {value} is not UTF-8 text; give a text file with one class name "
                               "per line") from None
        source = f"vocabulary file {value}"
    elif "," not in value and (os.sep in value or "/" in value or _FILE_EXT.search(value)):
        raise missing_file(value, "vocabulary file", "Give an existing file with one name per line, or "
                           "comma-separated names")
    else:
        names = [n.strip() for n in value.split(",")]
        source = f"--vocabulary {value!r}"
    names = [n for n in names if n]
    if not names:
        raise FreeSegError(f"{source} names no classes; give comma-separated names or a file with one name per line")
    return names


def _test_metadata(cfg: Any) -> Any | None:
    from ..data.catalog import MetadataCatalog
    from ..data.custom import register_from_config  # (importing freeseg.data registers the built-in ones)

    register_from_config(cfg)
    tests = list(cfg.DATASETS.TEST)
    if not tests or tests[0] not in MetadataCatalog:
        return None
    meta = MetadataCatalog.get(tests[0])
    return meta if meta.get("stuff_classes") else None


def resolve_vocabulary(cfg: Any, value: str | None, stuff: str | None) -> DemoVocabulary:
    """The run's classes with seen/unseen and thing/stuff flags (from the test data set's
    metadata where it knows a name); ``value`` None = the test data set's classes."""
    meta = _test_metadata(cfg)
    if value is not None:  # --vocabulary "" names no class: an error, not the default classes
        names = parse_vocabulary(value)
    elif meta is not None:
        names = list(meta.stuff_classes)
    else:
        test = list(cfg.DATASETS.TEST)[:1] or ["(none)"]
        raise FreeSegError(
            f"no --vocabulary given and the config's test data set {test[0]} is not registered; "
            "pass --vocabulary 'person,dog,grass' or a file with one class name per line"
        )
    trainable = thing = None
    if meta is not None:
        known = {n: i for i, n in enumerate(meta.stuff_classes)}
        flags = meta.get("trainable_flag")
        if flags is not None:
            trainable = tuple(int(flags[known[n]]) if n in known else 0 for n in names)
        things = set(meta.get("thing_classes") or [])
        if things:
            thing = tuple(int(n in things or n not in known) for n in names)
    if stuff is not None:
        stuff_names = {n.strip() for n in stuff.split(",") if n.strip()}
        unknown = sorted(stuff_names - set(names))
        if unknown:
            raise FreeSegError(f"--stuff names {unknown} that are not in the vocabulary; list vocabulary names only")
        thing = tuple(int(n not in stuff_names) for n in names)
    from ..modeling.meta_arch import Vocabulary

    Vocabulary.create(names, trainable, thing)  # duplicates and flag lengths checked here
    return DemoVocabulary(tuple(names), trainable, thing)


def collect_inputs(items: Sequence[str]) -> list[str]:
    """Files named by ``items`` (files, folders searched recursively, globs), in order, once."""
    if not items:
        raise FreeSegError("no --input: give image files, folders or globs")
    found: list[str] = []
    for item in items:
        if os.path.isdir(item):
            matches = [os.path.join(root, f) for root, _, files in sorted(os.walk(item)) for f in sorted(files)
                       if os.path.splitext(f)[1].lower() in IMAGE_EXTS | VIDEO_EXTS]
            if not matches:
                raise FreeSegError(f"folder {item} holds no images ({', '.join(sorted(IMAGE_EXTS))}) "
                                   f"or videos ({', '.join(sorted(VIDEO_EXTS))})")
        elif os.path.isfile(item):
            matches = [item]
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                raise FreeSegError(f"--input pattern {item!r} matches no file")
        else:
            raise FreeSegError(f"--input {item} does not exist; check the path")
        found += matches
    return list(dict.fromkeys(found))


def setup_cfg(args: argparse.Namespace, opts: list[str], tasks: list[str] | None) -> tuple[Any, list[str]]:
    """The frozen config and the tasks to produce."""
    import torch

    from ..config import get_cfg

    if not args.config_file:
        raise FreeSegError("no --config-file: pass the config the model was trained with (e.g. configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml)")
    if not os.path.isfile(args.config_file):
        raise FreeSegError(f"--config-file {args.config_file} does not exist; check the path")
    device = args.device
    if device == "auto":
        from .predictor import default_device

        device = default_device()
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    if getattr(args, "fast", False):
        cfg.merge_from_list(fast_opts(device))
    cfg.merge_from_list(opts)
    test = cfg.MODEL.MASK_FORMER.TEST
    names = list(cfg.INPUT.TASK_NAME)
    if tasks is None:
        tasks = ["semantic"] + [t for t, on in (("instance", test.INSTANCE_ON), ("panoptic", test.PANOPTIC_ON)) if on and _PHRASES[t] in names]
    for t in tasks:
        if t in _PHRASES and _PHRASES[t] not in names:
            raise FreeSegError(f"--task {t}: the config's INPUT.TASK_NAME {names} lacks {_PHRASES[t]!r}; this model was not trained for it")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FreeSegError(f"--device {device}: no CUDA GPU is usable here; use --device cpu")
    if not 0.0 <= args.confidence_threshold <= 1.0:
        raise FreeSegError(f"--confidence-threshold must lie in [0, 1], got {args.confidence_threshold}")
    cfg.merge_from_list([
        "MODEL.DEVICE", device,
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "instance" in tasks,
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "panoptic" in tasks,
        "MODEL.MASK_FORMER.TEST.ENTITY_ON", "entity" in tasks,
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", float(args.confidence_threshold),
    ])
    cfg.freeze()
    return cfg, list(dict.fromkeys(tasks))


def fast_opts(device: str) -> list[Any]:
    """``--fast``: the fastest setting measured (docs/demo.md, "Speed"): ``REGION_TOPK`` 8, CLIP's
    image tower and ``TEST.AMP`` in bf16 on a CPU (fp16 on a GPU, where every generation has it)."""
    dtype = "float16" if device.startswith("cuda") else "bfloat16"
    return ["MODEL.CLIP_ADAPTER.REGION_TOPK", 8, "MODEL.CLIP_ADAPTER.REGION_DTYPE", dtype,
            "TEST.AMP.ENABLED", True, "TEST.AMP.DTYPE", dtype]


def read_rgb(path: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB, EXIF orientation applied (photos from phones show upright); 16-bit and
    float images scaled to 8 bits (:func:`freeseg.data.mappers.common.pil_to_rgb`)."""
    from PIL import Image, ImageOps

    from ..data.mappers.common import pil_to_rgb

    with Image.open(path) as im:
        im.load()
        return pil_to_rgb(ImageOps.exif_transpose(im))


def video_frames(path: str) -> Iterator[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def run_fingerprint(cfg: Any, vocabulary: DemoVocabulary, tasks: Sequence[str], args: argparse.Namespace) -> str:
    """One line that changes with anything that changes the demo's outputs: the merged config,
    the weights file (path, size, modification time), the vocabulary, tasks and thresholds."""
    from .. import __version__
    from ..engine.weights import resolve_weights_path

    try:  # the predictor has loaded it; a stand-in predictor (tests) may have no file
        weights_id = file_identity(resolve_weights_path(str(cfg.MODEL.WEIGHTS)))
    except (FreeSegError, OSError):
        weights_id = [str(cfg.MODEL.WEIGHTS)]
    settings = {
        "config": cfg.dump(), "weights": weights_id,
        "vocabulary": [vocabulary.class_names, vocabulary.trainable_flag, vocabulary.thing_flags],
        "tasks": list(tasks), "confidence_threshold": args.confidence_threshold,
        "output_memory_gb": args.output_memory_gb, "freeseg": __version__,
    }
    return f"freeseg demo settings {settings_digest(settings)}"


def video_files(out_dir: str, stem: str, tasks: Sequence[str]) -> list[str]:
    """The overlay videos :func:`run_video` writes."""
    return [os.path.join(out_dir, f"{stem}_{t}.mp4") for t in tasks]


def check_output_dir(path: str) -> None:
    """FreeSegError (before the model loads) when ``path`` cannot be a folder: it, or the nearest
    part of it that exists, is a file."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise FreeSegError(f"--output {path}: {existing} is a file, not a folder; give a folder (created if missing)")


def unique_stem(path: str, used: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    candidate, n = stem, 2
    while candidate in used:
        candidate, n = f"{stem}_{n}", n + 1
    used.add(candidate)
    return candidate


def run_video(path: str, stem: str, predictor: Any, writer: Any, tasks: list[str]) -> list[str]:
    """Overlay videos ``<stem>_<task>.mp4``, frame by frame; returns the files written."""
    import cv2

    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    outs: dict[str, Any] = {}
    paths = dict(zip(tasks, video_files(writer.out_dir, stem, tasks)))
    # written as <name>.partial.mp4 and renamed when complete (an interrupted run leaves no
    # video that looks finished)
    partial = {t: p[: -len(".mp4")] + ".partial.mp4" for t, p in paths.items()}
    frames = 0
    try:
        for frame in video_frames(path):
            output = predictor([frame])[0]
            for t in tasks:
                picture = writer.overlay(frame, output, t)
                if t not in outs:
                    h, w = picture.shape[:2]
                    outs[t] = cv2.VideoWriter(partial[t], cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                outs[t].write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            frames += 1
    finally:
        for out in outs.values():
            out.release()
    if frames == 0:
        raise OSError("no frame could be decoded")
    for t in tasks:
        os.replace(partial[t], paths[t])
    return [paths[t] for t in tasks]


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    # nargs="+" options swallow the trailing KEY VALUE pairs when they come last
    inputs_raw, trailing = split_inputs_and_opts(args.input)
    task_items, trailing_task = split_inputs_and_opts(args.task) if args.task is not None else (None, [])
    opts = trailing + trailing_task + list(args.opts_trailing or []) + list(args.opts or [])
    cfg, tasks = setup_cfg(args, opts, parse_tasks(task_items))
    vocabulary = resolve_vocabulary(cfg, args.vocabulary, args.stuff)
    inputs = collect_inputs(inputs_raw)
    if args.output:
        check_output_dir(args.output)
    out_dir = args.output or tempfile.mkdtemp(prefix="freeseg-demo-")
    predictor = DemoPredictor.from_config(cfg, vocabulary, config_file=args.config_file, batch_size=args.batch_size,
                                          output_memory_gb=args.output_memory_gb)
    writer = ResultWriter(out_dir, vocabulary, tasks, args.confidence_threshold)
    log = RunLog(out_dir, run_fingerprint(cfg, vocabulary, tasks, args), fresh=args.overwrite)

    run = _DemoRun(predictor, writer, log, out_dir, tasks, args.batch_size)
    for path in tqdm(inputs, desc="demo", unit="image", file=sys.stderr, disable=None):
        run.add(path)
    run.flush()
    if run.skipped:
        print(f"skipped {len(run.skipped)} input(s): {', '.join(run.skipped)}", file=sys.stderr)
    if run.done + run.resumed == 0:
        raise FreeSegError(f"none of the {len(inputs)} input(s) could be segmented (reasons above); check the files")
    earlier = (f"; {run.resumed} finished by an earlier run with the same settings, kept (--overwrite redoes them)"
               if run.resumed else "")
    print(f"{run.done} input(s) segmented ({', '.join(tasks)}){earlier}; results in {os.path.abspath(out_dir)}")
    return 0


class _DemoRun:
    """The inputs of one demo run, one at a time: images are segmented in batches of
    ``batch_size``, videos frame by frame; inputs the run log has as done are skipped, and one
    that cannot be read or segmented is named and skipped, never the end of the run."""

    def __init__(self, predictor: DemoPredictor, writer: ResultWriter, log: RunLog, out_dir: str, tasks: list[str],
                 batch_size: int) -> None:
        self.predictor, self.writer, self.log = predictor, writer, log
        self.out_dir, self.tasks, self.batch_size = out_dir, tasks, batch_size
        self.done = self.resumed = 0
        self.skipped: list[str] = []
        self._stems: set[str] = set()
        self._pending: list[tuple[str, str, np.ndarray]] = []  # (path, stem, image)

    def add(self, path: str) -> None:
        stem = unique_stem(path, self._stems)
        is_video = os.path.splitext(path)[1].lower() in VIDEO_EXTS
        files = video_files(self.out_dir, stem, self.tasks) if is_video else self.writer.files(stem)
        if self.log.is_done(_log_key(stem, path), files):
            self.resumed += 1
        elif is_video:
            try:
                run_video(path, stem, self.predictor, self.writer, self.tasks)
            except Exception as e:  # noqa: BLE001 - as for images
                self._skip(path, f"cannot read or segment the video ({type(e).__name__}: {e})")
                return
            self.log.add(_log_key(stem, path))
            self.done += 1
        else:
            try:
                image = read_rgb(path)
            except (OSError, ValueError, SyntaxError) as e:  # Pillow's decode errors
                self._skip(path, f"not a readable image ({type(e).__name__}: {e})")
                return
            self._pending.append((path, stem, image))
            if len(self._pending) >= self.batch_size:
                self.flush()

    def flush(self) -> None:
        """Segment the images waiting for a full batch."""
        batch, self._pending = self._pending, []
        if batch:
            self._segment(batch)

    def _segment(self, batch: list[tuple[str, str, np.ndarray]]) -> None:
        try:
            outputs = self.predictor([image for _, _, image in batch])
        except Exception as e:  # noqa: BLE001 - one bad image must not end the run; it is named, with the error
            if len(batch) > 1:  # find the failing image; the others are still segmented
                for item in batch:
                    self._segment([item])
            else:
                self._skip(batch[0][0], f"segmentation failed ({type(e).__name__}: {e})")
            return
        for (path, stem, image), output in zip(batch, outputs):
            self.writer.write(stem, image, output)
            self.log.add(_log_key(stem, path))
        self.done += len(batch)

    def _skip(self, path: str, why: str) -> None:
        from tqdm import tqdm

        self.skipped.append(path)
        tqdm.write(f"skipping {path}: {why}", file=sys.stderr)


def _log_key(stem: str, path: str) -> str:
    """An input's line in the run log: its output stem, absolute path, size and modification
    time (an edited photo is segmented again)."""
    return "\t".join(str(v) for v in [stem, *file_identity(path)])
