"""Your own data sets from a YAML file: no code to write.

A file names the classes, optionally which of them are unseen (the zero-shot split), and the data
sets. Semantic data sets are a folder of images and a folder of label PNGs each, paired by file
stem; label value i is the i-th class, 255 is ignored:

.. code-block:: yaml

    # mydata.yaml (paths relative to this file, or absolute)
    classes: [road, car, tree, sky]       # or classes_file: one name per line
    unseen: [tree]                        # optional
    datasets:
      mydata_train: {images: images/train, labels: labels/train, classes: seen}
      mydata_val: {images: images/val, labels: labels/val}

Panoptic data sets, for all three tasks, are in COCO panoptic format (a folder of panoptic PNGs
and their JSON); the classes are then categories with the JSON's ids and ``isthing``:

.. code-block:: yaml

    categories:                           # or categories_file: a JSON list of them, or a
      - {id: 1, name: person, isthing: 1} # COCO panoptic JSON (its "categories" are used)
      - {id: 2, name: car, isthing: 1}
      - {id: 3, name: road}               # isthing 0 (stuff) when not given
    unseen: [car]
    datasets:
      mine_train: {images: images/train, panoptic: panoptic/train, panoptic_json: panoptic_train.json, classes: seen}
      mine_val: {images: images/val, panoptic: panoptic/val, panoptic_json: panoptic_val.json}

``DATASETS.CUSTOM ("mydata.yaml",)`` registers each data set for ``DATASETS.TRAIN`` / ``TEST``,
and each also as ``<name>_classification`` (stage-1 samples: one per class present in an image,
and for panoptic sets one per thing segment and one per segment as well).

``classes: seen`` makes a training set of the seen classes only, as FreeSeg trains: unseen
pixels are ignored and unseen segments dropped as the data are read (the files untouched), and
the seen classes are renumbered 0..S-1. A set with all classes (the default) carries
``trainable_flag``, so its evaluation reports seen / unseen / harmonic figures (mIoU; for
panoptic sets PQ and AP too, evaluator ``coco_panoptic_seg``, instance ground truth from the
thing segments).

A panoptic set's semantic maps (each segment's class index, 255 where no segment is) are
written next to its PNG folder, as ``<panoptic>_semseg``, the first time the set is loaded
(delete that folder after changing the annotations), unless ``labels`` names a folder of them.

Registering reads only the YAML file (and ``categories_file``); the folders are checked when a
data set is loaded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import yaml

from ..utils.errors import FreeSegError
from .builtin.classes import categories_meta, with_defaults, zero_shot_fields
from .catalog import DatasetCatalog, MetadataCatalog
from .loading import (
    flatten_full_task,
    label_count_file,
    load_classification,
    load_sem_seg,
    panoptic_records,
    read_json,
)

IGNORE = 255
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_CLASS_KEYS = ("classes", "classes_file", "categories", "categories_file")
_KEYS = {*_CLASS_KEYS, "unseen", "datasets"}
_SEM_KEYS = {"images", "labels", "classes"}
_PAN_KEYS = {"images", "panoptic", "panoptic_json", "labels", "classes"}


@dataclass(frozen=True)
class _File:
    """A data set file as read: its path, folder, categories (``{id, name, isthing, color}`` in
    class-index order) and the indexes of the unseen ones."""

    path: str
    where: str
    cats: list[dict]
    unseen: frozenset[int]
    panoptic: bool  # the classes came as categories (panoptic data sets allowed)

    def resolve(self, entry: dict, key: str) -> str:
        return os.path.join(self.where, str(entry[key]))


def register_custom(path: str) -> list[str]:
    """Register the data sets that the YAML file ``path`` describes (module docstring); returns
    their names. Registering the same file again is a no-op; a name taken by another data set
    is an error."""
    spec = _read_spec(path)
    cats, unseen = _categories(spec, path)
    file = _File(path=path, where=os.path.dirname(os.path.abspath(path)), cats=cats, unseen=unseen,
                 panoptic=bool({"categories", "categories_file"} & set(spec)))
    sets = spec.get("datasets")
    if not isinstance(sets, dict) or not sets:
        raise FreeSegError(f"{path}: 'datasets' must map data set names to their folders; see freeseg/data/custom.py")
    registered = []
    for name, entry in sets.items():
        seen_only = _check_entry(file, name, entry)
        variants = _panoptic_set(file, name, entry, seen_only) if "panoptic" in entry \
            else _semantic_set(file, name, entry, seen_only)
        for full, load, meta in variants:
            meta = {"custom_file": os.path.abspath(path), "ignore_label": IGNORE, **meta}
            if full in DatasetCatalog:
                if MetadataCatalog.get(full).get("custom_file") == meta["custom_file"]:
                    continue  # this file, registered before
                raise FreeSegError(f"{path}: data set name {full!r} is taken (a built-in data set or another "
                                   "file's); choose another name")
            DatasetCatalog.register(full, load)
            MetadataCatalog.get(full).set(**meta)
            registered.append(full)
    return registered


def register_from_config(cfg: Any) -> None:
    """Register the files of ``DATASETS.CUSTOM`` (before the data sets or their metadata are used)."""
    for path in cfg.DATASETS.get("CUSTOM", ()):
        register_custom(str(path))


def _read_spec(path: str) -> dict:
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
    return spec


def _categories(spec: dict, path: str) -> tuple[list[dict], frozenset[int]]:
    """The categories in class-index order, and the indexes of the unseen ones."""
    given = [k for k in _CLASS_KEYS if k in spec]
    if len(given) != 1:
        raise FreeSegError(f"{path}: give the classes as exactly one of {list(_CLASS_KEYS)}, got {given}")
    where = os.path.dirname(os.path.abspath(path))
    key = given[0]
    if key == "classes_file":
        file = _existing(os.path.join(where, str(spec[key])), path, key)
        with open(file) as f:
            cats: Any = [{"id": i, "name": line.strip()} for i, line in enumerate(x for x in f if x.strip())]
    elif key == "classes":
        cats = [{"id": i, "name": str(n)} for i, n in enumerate(spec[key] or [])]
    elif key == "categories_file":
        file = _existing(os.path.join(where, str(spec[key])), path, key)
        cats = read_json(file, f"fix it or the {key} entry of {path}")
        cats = cats.get("categories") if isinstance(cats, dict) else cats
    else:
        cats = spec[key]
    cats = _check_categories(cats, path)
    names = [c["name"] for c in cats]
    unseen = [str(n) for n in spec.get("unseen") or []]
    unknown = [n for n in unseen if n not in names]
    if unknown:
        raise FreeSegError(f"{path}: unseen classes {unknown} are not among the classes")
    if len(set(unseen)) == len(names):
        raise FreeSegError(f"{path}: every class is unseen; leave at least one to train on")
    return cats, frozenset(names.index(n) for n in unseen)


def _existing(file: str, path: str, key: str) -> str:
    if not os.path.isfile(file):
        raise FreeSegError(f"{path}: {key} {file} does not exist")
    return file


def _check_categories(cats: Any, path: str) -> list[dict]:
    form = "a list of {id, name, isthing} (isthing 0 or 1, 0 when not given)"
    if not isinstance(cats, list) or not all(isinstance(c, dict) and {"id", "name"} <= set(c) for c in cats):
        raise FreeSegError(f"{path}: the categories must be {form}")
    cats = [{**c, "name": str(c["name"]), "isthing": int(c.get("isthing", 0))} for c in cats]
    names, ids = [c["name"] for c in cats], [c["id"] for c in cats]
    if not cats or len(cats) >= IGNORE or len(set(names)) != len(names):
        raise FreeSegError(f"{path}: the classes must be 1 to {IGNORE - 1} distinct names, got {len(names)} "
                           f"({len(names) - len(set(names))} repeated)")
    if not all(isinstance(i, int) and i >= 0 for i in ids) or len(set(ids)) != len(ids) \
            or any(c["isthing"] not in (0, 1) for c in cats):
        raise FreeSegError(f"{path}: the categories must be {form}, with distinct non-negative integer ids")
    return with_defaults(cats)


def _check_entry(file: _File, name: str, entry: Any) -> bool:
    """A one-line error for a data set entry that lacks or misnames keys; True for a seen-only set."""
    panoptic = isinstance(entry, dict) and "panoptic" in entry
    keys, needed = (_PAN_KEYS, {"images", "panoptic", "panoptic_json"}) if panoptic else (_SEM_KEYS, {"images", "labels"})
    if not isinstance(entry, dict) or not needed <= set(entry) or set(entry) - keys:
        raise FreeSegError(f"{file.path}: data set {name!r} needs {sorted(needed)} and may say "
                           f"{sorted(keys - needed)}, got {entry!r}")
    if panoptic and not file.panoptic:
        raise FreeSegError(f"{file.path}: data set {name!r} is panoptic, so the file must give 'categories' "
                           "(ids as in its panoptic JSON, with isthing) instead of class names")
    which = entry.get("classes", "all")
    if which not in ("all", "seen"):
        raise FreeSegError(f"{file.path}: data set {name!r} has classes: {which!r}; use 'all' or 'seen'")
    if which == "seen" and not file.unseen:
        raise FreeSegError(f"{file.path}: data set {name!r} has classes: seen but the file lists no 'unseen' classes")
    return which == "seen"


def _seen_lut(file: _File) -> list[int]:
    """Label value (class index over all classes) -> index among the seen classes, 255 for the rest."""
    lut = [IGNORE] * 256
    for new, old in enumerate(i for i in range(len(file.cats)) if i not in file.unseen):
        lut[old] = new
    return lut


def _zero_shot(file: _File, seen_only: bool) -> dict[str, Any]:
    if seen_only or not file.unseen:
        return {}
    return zero_shot_fields(file.cats, {file.cats[i]["id"] for i in file.unseen}, with_thing_stuff=file.panoptic)


_Variant = tuple[str, Callable[[], list[dict]], dict[str, Any]]


def _semantic_set(file: _File, name: str, entry: dict, seen_only: bool) -> list[_Variant]:
    images, labels = file.resolve(entry, "images"), file.resolve(entry, "labels")
    lut = _seen_lut(file) if seen_only else None
    names = [c["name"] for i, c in enumerate(file.cats) if not (seen_only and i in file.unseen)]
    meta = {"stuff_classes": names, "image_root": images, "sem_seg_root": labels, **_zero_shot(file, seen_only)}
    out = []
    for suffix, evaluator in (("", "sem_seg"), ("_classification", "classification")):
        full = name + suffix

        def load(full=full, classification=bool(suffix)) -> list[dict]:
            _require_folders(full, file.path, images, labels)
            if classification:
                _ensure_label_counts(labels)
                return load_classification(labels, images, image_exts=_IMAGE_EXTS, lut=lut)
            return _with_lut(load_sem_seg(labels, images, image_exts=_IMAGE_EXTS), lut)

        out.append((full, load, {**meta, "evaluator_type": evaluator}))
    return out


def _panoptic_set(file: _File, name: str, entry: dict, seen_only: bool) -> list[_Variant]:
    images, pan_root, pan_json = (file.resolve(entry, k) for k in ("images", "panoptic", "panoptic_json"))
    derived = "labels" not in entry
    sem_root = pan_root.rstrip("/\\") + "_semseg" if derived else file.resolve(entry, "labels")
    lut = _seen_lut(file) if seen_only else None
    cats = [c for i, c in enumerate(file.cats) if not (seen_only and i in file.unseen)]
    meta = {**categories_meta(cats), **_zero_shot(file, seen_only), "image_root": images, "panoptic_root": pan_root,
            "panoptic_json": pan_json, "sem_seg_root": sem_root, "label_divisor": 1000}
    out = []
    for suffix, evaluator in (("", "coco_panoptic_seg"), ("_classification", "classification")):
        full = name + suffix

        def load(full=full, classification=bool(suffix)) -> list[dict]:
            _require_folders(full, file.path, images, pan_root)
            if not os.path.isfile(pan_json):
                raise FreeSegError(f"data set '{full}': panoptic JSON {pan_json} not found; fix its path in {file.path}")
            info = read_json(pan_json, f"fix it or its path in {file.path}")
            _check_annotations(info, pan_json, file)
            if derived:
                _ensure_semantic_maps(info["annotations"], pan_root, sem_root, file)
            else:
                _require_folders(full, file.path, sem_root)
            records = _with_lut(panoptic_records(info, pan_json, images, pan_root, sem_root, meta,
                                                 image_exts=_IMAGE_EXTS), lut)
            if not classification:
                return records
            _ensure_label_counts(sem_root)
            return flatten_full_task(load_classification(sem_root, images, image_exts=_IMAGE_EXTS, lut=lut), records)

        out.append((full, load, {**meta, "evaluator_type": evaluator}))
    return out


def _with_lut(records: list[dict], lut: Sequence[int] | None) -> list[dict]:
    return records if lut is None else [{**r, "sem_seg_lut": list(lut)} for r in records]


def _require_folders(name: str, path: str, *folders: str) -> None:
    for folder in folders:
        if not os.path.isdir(folder):
            raise FreeSegError(f"data set '{name}': folder {folder} not found; fix its path in {path}")


def _check_annotations(info: Any, pan_json: str, file: _File) -> None:
    """A COCO panoptic JSON whose segments use only the file's categories."""
    if not isinstance(info, dict) or not isinstance(info.get("annotations"), list):
        raise FreeSegError(f"{pan_json} has no 'annotations' list; it must be a COCO panoptic JSON")
    known = {c["id"] for c in file.cats}
    used = {s["category_id"] for a in info["annotations"] for s in a.get("segments_info", [])}
    if used - known:
        raise FreeSegError(f"{pan_json} has segments of category ids {sorted(used - known)[:10]} that "
                           f"{file.path} does not list; add them to its categories")


def _ensure_semantic_maps(annotations: list[dict], pan_root: str, sem_root: str, file: _File) -> None:
    """Write the semantic maps of the panoptic annotations (class indexes over all the file's
    classes) that are not there yet; an interrupted run resumes (each map is written whole)."""
    from .prepare.coco_alldata import write_semantic_maps

    # Annotations whose PNG is missing get no map: the loaders deal with their samples.
    todo = [a for a in annotations if os.path.isfile(os.path.join(pan_root, a["file_name"]))]
    done = set(os.listdir(sem_root)) if os.path.isdir(sem_root) else set()
    todo = [a for a in todo if os.path.splitext(a["file_name"])[0] + ".png" not in done]
    if not todo:
        return
    try:
        os.makedirs(sem_root, exist_ok=True)
        writable = os.access(sem_root, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        raise FreeSegError(f"cannot write the semantic maps {sem_root} of {pan_root}; write them elsewhere "
                           f"and name that folder as the data set's 'labels' in {file.path}")
    write_semantic_maps(todo, pan_root, sem_root, {c["id"]: i for i, c in enumerate(file.cats)},
                        nproc=1, desc=f"semantic maps of {os.path.basename(pan_root)}")


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
