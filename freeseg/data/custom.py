"""Your own semantic-segmentation data sets, from a YAML file: no code to write.

A file names the classes (in label-map order), optionally which of them are unseen, and the data
sets (a folder of images and a folder of label PNGs each, paired by file stem):

.. code-block:: yaml

    # mydata.yaml (paths relative to this file, or absolute)
    classes: [road, car, tree, sky]       # label value i is classes[i]; 255 is ignored
    unseen: [tree]                        # optional: the zero-shot split
    datasets:
      mydata_train: {images: images/train, labels: labels/train, classes: seen}
      mydata_val: {images: images/val, labels: labels/val}

and ``DATASETS.CUSTOM ("mydata.yaml",)`` registers ``mydata_train`` / ``mydata_val`` for
``DATASETS.TRAIN`` / ``TEST``, each also as ``<name>_classification`` (stage-1 samples: one per
class present in an image). ``classes: seen`` makes a training set of the seen classes only, as
FreeSeg trains: unseen pixels are ignored (remapped to 255 as the labels are read, the files
untouched) and the seen classes renumbered 0..S-1. A set with all classes (the default) carries
``trainable_flag``, so its evaluation reports seen / unseen / harmonic mIoU.

Registering reads only the YAML file; the folders are checked when a data set is loaded.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import yaml

from ..utils.errors import FreeSegError
from .catalog import DatasetCatalog, MetadataCatalog
from .loading import label_count_file, load_classification, load_sem_seg

IGNORE = 255
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_KEYS = {"classes", "classes_file", "unseen", "datasets"}
_SET_KEYS = {"images", "labels", "classes"}


def register_custom(path: str) -> list[str]:
    """Register the data sets that the YAML file ``path`` describes (module docstring); returns
    their names. Registering the same file again is a no-op; a name taken by another data set
    is an error."""
    spec, where = _read_spec(path)
    names = _class_names(spec, where, path)
    unseen = _unseen(spec, names, path)
    sets = spec.get("datasets")
    if not isinstance(sets, dict) or not sets:
        raise FreeSegError(f"{path}: 'datasets' must map data set names to {{images, labels}}; see freeseg/data/custom.py")
    registered = []
    for name, entry in sets.items():
        if not isinstance(entry, dict) or not {"images", "labels"} <= set(entry) or set(entry) - _SET_KEYS:
            raise FreeSegError(f"{path}: data set {name!r} needs 'images' and 'labels' folders (and may say "
                               f"'classes: seen' or 'all'), got {entry!r}")
        which = entry.get("classes", "all")
        if which not in ("all", "seen"):
            raise FreeSegError(f"{path}: data set {name!r} has classes: {which!r}; use 'all' or 'seen'")
        if which == "seen" and not unseen:
            raise FreeSegError(f"{path}: data set {name!r} has classes: seen but the file lists no 'unseen' classes")
        images, labels = (os.path.join(where, str(entry[k])) for k in ("images", "labels"))
        meta = _metadata(names, unseen, which == "seen")
        for suffix, evaluator in (("", "sem_seg"), ("_classification", "classification")):
            full = f"{name}{suffix}"
            source = {"custom_file": os.path.abspath(path), "image_root": images, "sem_seg_root": labels}
            if full in DatasetCatalog:
                if MetadataCatalog.get(full).get("custom_file") == source["custom_file"]:
                    continue  # this file, registered before
                raise FreeSegError(f"{path}: data set name {full!r} is taken (a built-in data set or another "
                                   "file's); choose another name")
            DatasetCatalog.register(full, _loader(full, images, labels, meta.get("label_lut"), bool(suffix), path))
            MetadataCatalog.get(full).set(evaluator_type=evaluator, ignore_label=IGNORE, **source,
                                          **{k: v for k, v in meta.items() if k != "label_lut"})
            registered.append(full)
    return registered


def register_from_config(cfg: Any) -> None:
    """Register the files of ``DATASETS.CUSTOM`` (before the data sets or their metadata are used)."""
    for path in cfg.DATASETS.get("CUSTOM", ()):
        register_custom(str(path))


def _read_spec(path: str) -> tuple[dict, str]:
    if not os.path.isfile(path):
        raise FreeSegError(f"data set file {path} does not exist; check DATASETS.CUSTOM")
    try:
        with open(path) as f:
            spec = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise FreeSegError(f"data set file {path} is not valid YAML ({str(e).splitlines()[0]}); fix it") from None
    if not isinstance(spec, dict) or set(spec) - _KEYS:
        extra = sorted(set(spec) - _KEYS) if isinstance(spec, dict) else spec
        raise FreeSegError(f"data set file {path}: unknown keys {extra}; it takes {sorted(_KEYS)}")
    return spec, os.path.dirname(os.path.abspath(path))


def _class_names(spec: dict, where: str, path: str) -> list[str]:
    if ("classes" in spec) == ("classes_file" in spec):
        raise FreeSegError(f"{path}: give the class names as 'classes' (a list) or 'classes_file' (one per line), "
                           "exactly one of them")
    if "classes_file" in spec:
        file = os.path.join(where, str(spec["classes_file"]))
        if not os.path.isfile(file):
            raise FreeSegError(f"{path}: classes_file {file} does not exist")
        with open(file) as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        names = [str(n) for n in spec["classes"] or []]
    if not names or len(set(names)) != len(names) or len(names) >= IGNORE:
        raise FreeSegError(f"{path}: the classes must be 1 to {IGNORE - 1} distinct names, got {len(names)} "
                           f"({len(names) - len(set(names))} repeated)")
    return names


def _unseen(spec: dict, names: list[str], path: str) -> set[int]:
    unseen = [str(n) for n in spec.get("unseen") or []]
    unknown = [n for n in unseen if n not in names]
    if unknown:
        raise FreeSegError(f"{path}: unseen classes {unknown} are not among the classes")
    if len(unseen) == len(names):
        raise FreeSegError(f"{path}: every class is unseen; leave at least one to train on")
    return {names.index(n) for n in unseen}


def _metadata(names: list[str], unseen: set[int], seen_only: bool) -> dict[str, Any]:
    """Metadata of a semantic data set: its classes and, for all classes with a split, the
    zero-shot fields; for a seen-only set the lookup table from label values to its class ids."""
    if seen_only:
        seen = [i for i in range(len(names)) if i not in unseen]
        lut = [IGNORE] * 256
        for new, old in enumerate(seen):
            lut[old] = new
        return {"stuff_classes": [names[i] for i in seen], "label_lut": lut}
    meta: dict[str, Any] = {"stuff_classes": list(names)}
    if unseen:
        flag = [0 if i in unseen else 1 for i in range(len(names))]
        meta.update(trainable_flag=flag, evaluation_set={"base": [i for i, f in enumerate(flag) if f]})
    return meta


def _loader(name: str, images: str, labels: str, lut: Sequence[int] | None, classification: bool, path: str):
    def load() -> list[dict]:
        for folder in (images, labels):
            if not os.path.isdir(folder):
                raise FreeSegError(f"data set '{name}': folder {folder} not found; fix its path in {path}")
        if classification:
            _ensure_label_counts(labels)
            return load_classification(labels, images, image_exts=_IMAGE_EXTS, lut=lut)
        records = load_sem_seg(labels, images, image_exts=_IMAGE_EXTS)
        return records if lut is None else [{**r, "sem_seg_lut": list(lut)} for r in records]

    return load


def _ensure_label_counts(labels: str) -> None:
    """Write the label-count file of the stage-1 samples (``freeseg prepare mask_cls_collect``)
    the first time they are loaded."""
    from .prepare.semantic import collect_label_counts

    count_file = label_count_file(labels)
    if os.path.exists(count_file):
        return
    try:
        collect_label_counts(labels, count_file, nproc=1)
    except OSError as e:
        raise FreeSegError(f"cannot write the label-count file {count_file} ({e}); run "
                           f"`freeseg prepare mask_cls_collect {labels}` where it can be written") from None
