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

Instance data sets are a folder of images and a COCO instance JSON (polygons or RLE); every
category counts as a thing, and the file's categories may be that JSON (``categories_file``):

.. code-block:: yaml

    categories_file: annotations/instances_val.json
    unseen: [car]
    datasets:
      ins_train: {images: images/train, instances: annotations/instances_train.json, classes: seen}
      ins_val: {images: images/val, instances: annotations/instances_val.json}

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
(made again when the categories change; delete that folder and its ``_label_count.json``
after changing the annotations), unless ``labels`` names a folder of them.
An instance set is converted once (again when its JSON or the categories change) into
panoptic PNGs and semantic maps next to the JSON (``<json>_panoptic``, ``<json>_semseg``;
overlaps go to the smaller instance); it is evaluated with AP (evaluator ``coco``) against the JSON's own masks.

Registering reads only the YAML file (and ``categories_file``); the folders and JSON files are
checked when a data set is loaded.
"""
from __future__ import annotations

import functools
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
# The keys of each kind of data set entry: (required, optional).
_ENTRY_KEYS = {
    "semantic": ({"images", "labels"}, {"classes"}),
    "panoptic": ({"images", "panoptic", "panoptic_json"}, {"labels", "classes"}),
    "instances": ({"images", "instances"}, {"classes"}),
}


@dataclass(frozen=True)
class _File:
    """A data set file as read: its path, folder, categories (``{id, name, isthing, color}`` in
    class-index order) and the indexes of the unseen ones."""

    path: str
    where: str
    cats: list[dict]
    unseen: frozenset[int]
    by_category: bool  # the classes came as categories with ids (panoptic and instance sets need them)

    def resolve(self, entry: dict, key: str) -> str:
        return os.path.join(self.where, str(entry[key]))


def register_custom(path: str) -> list[str]:
    """Register the data sets that the YAML file ``path`` describes (module docstring); returns
    their names. Registering the same file again is a no-op; a name taken by another data set
    is an error."""
    spec = _read_spec(path)
    cats, unseen = _categories(spec, path)
    file = _File(path=path, where=os.path.dirname(os.path.abspath(path)), cats=cats, unseen=unseen,
                 by_category=bool({"categories", "categories_file"} & set(spec)))
    sets = spec.get("datasets")
    if not isinstance(sets, dict) or not sets:
        raise FreeSegError(f"{path}: 'datasets' must map data set names to their folders; see freeseg/data/custom.py")
    registered = []
    for name, entry in sets.items():
        kind = _kind(entry)
        seen_only = _check_entry(file, name, entry, kind)
        variants = _SET_BUILDERS[kind](file, name, entry, seen_only)
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
    names, ids = [str(c["name"]) for c in cats], [c["id"] for c in cats]
    if not cats or len(cats) >= IGNORE or len(set(names)) != len(names):
        raise FreeSegError(f"{path}: the classes must be 1 to {IGNORE - 1} distinct names, got {len(names)} "
                           f"({len(names) - len(set(names))} repeated)")
    if not all(isinstance(i, int) and i >= 0 for i in ids) or len(set(ids)) != len(ids) \
            or any(c.get("isthing", 0) not in (0, 1) for c in cats):
        raise FreeSegError(f"{path}: the categories must be {form}, with distinct non-negative integer ids")
    return with_defaults([{**c, "name": n, "isthing": int(c.get("isthing", 0))} for c, n in zip(cats, names)])


def _kind(entry: Any) -> str:
    if isinstance(entry, dict):
        for kind in ("panoptic", "instances"):
            if kind in entry:
                return kind
    return "semantic"


def _check_entry(file: _File, name: str, entry: Any, kind: str) -> bool:
    """A one-line error for a data set entry that lacks or misnames keys; True for a seen-only set."""
    needed, optional = _ENTRY_KEYS[kind]
    if not isinstance(entry, dict) or not needed <= set(entry) or set(entry) - needed - optional:
        raise FreeSegError(f"{file.path}: data set {name!r} needs {sorted(needed)} and may say "
                           f"{sorted(optional)}, got {entry!r}")
    if kind != "semantic" and not file.by_category:
        raise FreeSegError(f"{file.path}: data set {name!r} is {kind}, so the file must give 'categories' "
                           f"(ids as in its {kind} JSON) instead of class names")
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


def _zero_shot(file: _File, seen_only: bool, cats: list[dict] | None = None) -> dict[str, Any]:
    """``trainable_flag`` / ``evaluation_set`` of a set with all classes (``cats``: the file's
    categories as that set sees them)."""
    if seen_only or not file.unseen:
        return {}
    cats = file.cats if cats is None else cats
    return zero_shot_fields(cats, {cats[i]["id"] for i in file.unseen}, with_thing_stuff=file.by_category)


_Variant = tuple[str, Callable[[], list[dict]], dict[str, Any]]


def _variants(name: str, meta: dict[str, Any], evaluator: str,
              load: Callable[[str, bool], list[dict]]) -> list[_Variant]:
    """The data set ``name`` and its stage-1 twin ``<name>_classification``; ``load(full name,
    classification)`` gives their samples."""
    return [(name + suffix, functools.partial(load, name + suffix, bool(suffix)), {**meta, "evaluator_type": kind})
            for suffix, kind in (("", evaluator), ("_classification", "classification"))]


def _semantic_set(file: _File, name: str, entry: dict, seen_only: bool) -> list[_Variant]:
    images, labels = file.resolve(entry, "images"), file.resolve(entry, "labels")
    lut = _seen_lut(file) if seen_only else None
    names = [c["name"] for i, c in enumerate(file.cats) if not (seen_only and i in file.unseen)]

    def load(full: str, classification: bool) -> list[dict]:
        _require_folders(full, file.path, images, labels)
        if classification:
            _ensure_label_counts(labels)
            return load_classification(labels, images, image_exts=_IMAGE_EXTS, lut=lut)
        return _with_lut(load_sem_seg(labels, images, image_exts=_IMAGE_EXTS), lut)

    meta = {"stuff_classes": names, "image_root": images, "sem_seg_root": labels, **_zero_shot(file, seen_only)}
    return _variants(name, meta, "sem_seg", load)


def _panoptic_set(file: _File, name: str, entry: dict, seen_only: bool) -> list[_Variant]:
    images, pan_root, pan_json = (file.resolve(entry, k) for k in ("images", "panoptic", "panoptic_json"))
    derived = "labels" not in entry
    sem_root = pan_root.rstrip("/\\") + "_semseg" if derived else file.resolve(entry, "labels")
    cats = [c for i, c in enumerate(file.cats) if not (seen_only and i in file.unseen)]
    meta = {**categories_meta(cats), **_zero_shot(file, seen_only), "image_root": images, "panoptic_root": pan_root,
            "panoptic_json": pan_json, "sem_seg_root": sem_root, "label_divisor": 1000}

    def load(full: str, classification: bool) -> list[dict]:
        _require_folders(full, file.path, images, pan_root)
        info = _read_annotations(full, file, pan_json, panoptic=True)
        if derived:
            _ensure_semantic_maps(info["annotations"], pan_root, sem_root, file)
        else:
            _require_folders(full, file.path, sem_root)
        return _panoptic_samples(file, info, pan_json, images, pan_root, sem_root, meta, seen_only, classification)

    return _variants(name, meta, "coco_panoptic_seg", load)


def _instance_set(file: _File, name: str, entry: dict, seen_only: bool) -> list[_Variant]:
    """COCO instance annotations, converted once to panoptic PNGs + semantic maps next to the JSON
    (``freeseg/data/prepare/instances.py``); every category is a thing, evaluation is AP."""
    from .prepare.instances import panoptic_from_instances

    images, inst_json = file.resolve(entry, "images"), file.resolve(entry, "instances")
    stem = os.path.splitext(inst_json)[0]
    pan_root, sem_root = stem + "_panoptic", stem + "_semseg"
    things = [{**c, "isthing": 1} for c in file.cats]
    cats = [c for i, c in enumerate(things) if not (seen_only and i in file.unseen)]
    meta = {**categories_meta(cats), **_zero_shot(file, seen_only, things), "image_root": images,
            "json_file": inst_json, "panoptic_root": pan_root, "sem_seg_root": sem_root, "label_divisor": 1000}

    def load(full: str, classification: bool) -> list[dict]:
        _require_folders(full, file.path, images)
        if not os.path.isfile(inst_json):
            raise FreeSegError(f"data set '{full}': instance JSON {inst_json} not found; fix its path in {file.path}")
        try:  # the instance JSON (large for big sets) is read only when it must be converted
            info = panoptic_from_instances(lambda: _read_annotations(full, file, inst_json, panoptic=False),
                                           inst_json, pan_root, sem_root, {c["id"]: i for i, c in enumerate(file.cats)})
        except OSError as e:
            raise FreeSegError(f"cannot write {pan_root} and {sem_root}, converted from {inst_json} ({e}); "
                               "copy the annotations to a folder you can write") from None
        return _panoptic_samples(file, info, inst_json, images, pan_root, sem_root, meta, seen_only, classification,
                                 converted_from=pan_root + ".json")

    return _variants(name, meta, "coco", load)


def _read_annotations(full: str, file: _File, json_file: str, panoptic: bool) -> dict:
    kind = "panoptic" if panoptic else "instance"
    if not os.path.isfile(json_file):
        raise FreeSegError(f"data set '{full}': {kind} JSON {json_file} not found; fix its path in {file.path}")
    info = read_json(json_file, f"fix it or its path in {file.path}")
    _check_json(info, json_file, file, panoptic)
    return info


def _panoptic_samples(file: _File, info: dict, json_file: str, images: str, pan_root: str, sem_root: str,
                      meta: dict, seen_only: bool, classification: bool, converted_from: str | None = None
                      ) -> list[dict]:
    """The records of panoptic annotations ``info`` or, with ``classification``, their stage-1
    samples (semantic, instance and panoptic; the label maps' class lists are read again when
    the file ``converted_from`` that wrote them is newer)."""
    lut = _seen_lut(file) if seen_only else None
    records = _with_lut(panoptic_records(info, json_file, images, pan_root, sem_root, meta,
                                         image_exts=_IMAGE_EXTS), lut)
    if not classification:
        return records
    _ensure_label_counts(sem_root, converted_from)
    return flatten_full_task(load_classification(sem_root, images, image_exts=_IMAGE_EXTS, lut=lut), records)


def _with_lut(records: list[dict], lut: Sequence[int] | None) -> list[dict]:
    if lut is None:
        return records
    shared = list(lut)  # one list for all records (not 256 entries per record)
    return [{**r, "sem_seg_lut": shared} for r in records]


def _require_folders(name: str, path: str, *folders: str) -> None:
    for folder in folders:
        if not os.path.isdir(folder):
            raise FreeSegError(f"data set '{name}': folder {folder} not found; fix its path in {path}")


def _check_json(info: Any, json_file: str, file: _File, panoptic: bool) -> None:
    """A COCO panoptic (or instance) JSON whose segments (annotations) use only the file's categories."""
    form, lists = ("COCO panoptic", ("annotations",)) if panoptic else ("COCO instance", ("images", "annotations"))
    if not isinstance(info, dict) or not all(isinstance(info.get(k), list) for k in lists):
        raise FreeSegError(f"{json_file} lacks the lists {list(lists)}; it must be a {form} JSON")
    if panoptic:
        if not all(isinstance(a, dict) and isinstance(a.get("segments_info"), list) for a in info["annotations"]):
            raise FreeSegError(f"{json_file}: an annotation lacks its 'segments_info' list; it must be a {form} JSON")
        segments = [seg for a in info["annotations"] for seg in a["segments_info"]]
    else:
        segments = info["annotations"]
        _check_instance_fields(info, json_file)
    unknown = {seg.get("category_id") for seg in segments} - {c["id"] for c in file.cats}
    if unknown:
        listed = ", ".join(sorted(map(str, unknown))[:10])
        raise FreeSegError(f"{json_file} has annotations of category ids {listed} "
                           f"that {file.path} does not list; add them to its categories")


def _check_instance_fields(info: dict, json_file: str) -> None:
    """Every image with its id, file name and size; every annotation with a known image id."""
    image_keys, ann_keys = {"id", "file_name", "height", "width"}, {"image_id", "category_id", "segmentation"}
    for key, items, needed in (("images", info["images"], image_keys), ("annotations", info["annotations"], ann_keys)):
        bad = next((x for x in items if not isinstance(x, dict) or not needed <= set(x)), None)
        if bad is not None:
            missing = sorted(needed - set(bad if isinstance(bad, dict) else ()))
            raise FreeSegError(f"{json_file}: an entry of '{key}' lacks {missing} ({str(bad)[:80]}); "
                               "it must be a COCO instance JSON")
    ids = {im["id"] for im in info["images"]}
    orphans = {a["image_id"] for a in info["annotations"]} - ids
    if orphans:
        listed = ", ".join(sorted(map(str, orphans))[:5])
        raise FreeSegError(f"{json_file}: annotations of image ids {listed} that its 'images' do not list")


_SET_BUILDERS = {"semantic": _semantic_set, "panoptic": _panoptic_set, "instances": _instance_set}


def _ensure_semantic_maps(annotations: list[dict], pan_root: str, sem_root: str, file: _File) -> None:
    """Write the semantic maps of the panoptic annotations (class indexes over all the file's
    classes) that are not there yet; an interrupted run resumes (each map is written whole).
    ``<sem_root>_classes.json`` records the class of each category id: when the file's
    categories change, the maps (and their label counts) are made again."""
    from .prepare.coco_alldata import write_semantic_maps
    from .prepare.common import write_json

    cat_map = {c["id"]: i for i, c in enumerate(file.cats)}
    stamp = sem_root.rstrip("/\\") + "_classes.json"
    classes = [[k, v] for k, v in sorted(cat_map.items())]
    if os.path.isdir(sem_root) and (not os.path.isfile(stamp) or read_json(stamp, "delete it") != classes):
        for stale in [os.path.join(sem_root, f) for f in os.listdir(sem_root) if f.endswith(".png")] \
                + [label_count_file(sem_root)]:
            if os.path.exists(stale):
                os.remove(stale)
    done = set(os.listdir(sem_root)) if os.path.isdir(sem_root) else set()
    todo = [a for a in annotations if os.path.splitext(a["file_name"])[0] + ".png" not in done]
    # Annotations whose PNG is missing get no map: the loaders deal with their samples.
    todo = [a for a in todo if os.path.isfile(os.path.join(pan_root, a["file_name"]))]
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
    write_json(classes, stamp)  # first: an interrupted run resumes with the same classes
    write_semantic_maps(todo, pan_root, sem_root, cat_map, nproc=1,
                        desc=f"semantic maps of {os.path.basename(pan_root)}")


def _ensure_label_counts(labels: str, source: str | None = None) -> None:
    """Write the label-count file of the stage-1 samples (``freeseg prepare mask_cls_collect``)
    the first time they are loaded, and again when it is older than the file ``source`` that
    the label maps were converted from."""
    from .prepare.semantic import collect_label_counts

    count_file = label_count_file(labels)
    if os.path.exists(count_file) and (source is None or os.path.getmtime(count_file) >= os.path.getmtime(source)):
        return
    try:
        collect_label_counts(labels, count_file, nproc=1)
    except OSError as e:
        raise FreeSegError(f"cannot write the label-count file {count_file} ({e}); run "
                           f"`freeseg prepare mask_cls_collect {labels}` where it can be written") from None
