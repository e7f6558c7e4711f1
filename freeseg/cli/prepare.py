"""``freeseg prepare <script> ...`` (FreeSeg's preparation scripts), ``freeseg prepare custom
<yaml>`` (your own data sets, loaded once) and ``freeseg prepare --list``.

Scripts take the data set folder (default under ``$DETECTRON2_DATASETS``), ``--nproc`` workers
and ``--subset`` (accept inputs smaller than the published data set; counts are then verified
against what was read).
"""
from __future__ import annotations

import argparse
import os
from typing import Callable, Sequence

from ..data.builtin import dataset_root

LAYOUTS = {
    "coco (COCO-Stuff 171, full task, panoptic 133)": [
        ("coco_2017_{train,test}_stuff{,_base,_novel}_sem_seg{,_classification}",
         "coco/{train2017,val2017}/ + coco/stuffthingmaps_detectron2/", "prepare_coco_stuff_164k_sem_seg"),
        ("coco_2017_{train,test}_full_task{,_base,_novel}{,_classification}",
         "coco/stuffthingmaps_panoptic_detectron2/ + coco/panoptic_detectron2/", "prepare_coco_alldata"),
        ("coco_2017_{train,val}_panoptic_with_sem_seg",
         "coco/panoptic_{train,val}2017/ + coco/annotations/panoptic_*.json + coco/panoptic_semseg_*/",
         "prepare_coco_alldata --panoptic-semseg"),
    ],
    "VOC2012 (PASCAL VOC 20, 15 seen / 5 unseen)": [
        ("voc{,_base,_novel}_sem_seg_{train,test}{,_classification}",
         "VOC2012/JPEGImages/ + VOC2012/annotations_detectron2/{train,val}{,_base,_novel}/", "prepare_voc_sem_seg"),
    ],
    "ADEChallengeData2016 (ADE20K-150, 135 seen / 15 unseen)": [
        ("ade20k_all_{train,val}{,_base,_novel}{,_classification}",
         "images/ + annotations_detectron2/ + ade20k_panoptic_*{/,.json} + ade20k_instance_*.json",
         "prepare_ade20k_{sem,pan,ins}_seg_novel"),
        ("ade20k_sem_seg_val (A-150)", "images/validation/ + annotations_detectron2/validation/",
         "prepare_ade20k_sem_seg_novel"),
    ],
    "cross-data-set test sets": [
        ("ade20k_full_sem_seg_val (A-847)", "ADE20K_2021_17_01/{images,annotations}_detectron2/validation/",
         "MaskFormer's prepare_ade20k_full_sem_seg.py"),
        ("pascal_context_59_sem_seg_val (PC-59)", "pascal_context/val/{image,label}/", "zsseg's PC-59 script"),
        ("pascal_context_459_sem_seg_val (PC-459)", "pascal_context/val/{image,label_full}/", "zsseg's PC-459 script"),
        ("voc_sem_seg_test (PAS-20)", "VOC2012/annotations_detectron2/val/", "prepare_voc_sem_seg"),
    ],
}


def _args(prog: str, default: str, argv: Sequence[str], extra: Callable[[argparse.ArgumentParser], None] | None = None):
    p = argparse.ArgumentParser(prog=f"freeseg prepare {prog}")
    p.add_argument("path", nargs="?", default=os.path.join(dataset_root(), default), help=f"default: $DETECTRON2_DATASETS/{default}")
    p.add_argument("-o", "--out-dir", default=None, help="write outputs here instead of next to the inputs")
    p.add_argument("--nproc", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--subset", action="store_true", help="inputs are a subset: do not require the published counts")
    if extra:
        extra(p)
    return p.parse_args(list(argv))


def _coco_stuff(argv):
    from ..data.prepare import prepare_coco_stuff

    a = _args("prepare_coco_stuff_164k_sem_seg", "coco", argv)
    return prepare_coco_stuff(a.path, a.out_dir, a.nproc, a.subset)


def _coco_all(argv):
    from ..data.prepare import prepare_coco_alldata

    a = _args("prepare_coco_alldata", "coco", argv,
              lambda p: p.add_argument("--panoptic-semseg", action="store_true",
                                       help="also write panoptic_semseg_{train,val}2017 (COCO panoptic 133 label maps)"))
    return prepare_coco_alldata(a.path, a.out_dir, a.nproc, a.subset, a.panoptic_semseg)


def _voc(argv):
    from ..data.prepare import prepare_voc

    a = _args("prepare_voc_sem_seg", "VOC2012", argv)
    return prepare_voc(a.path, a.out_dir, a.nproc, a.subset)


def _ade_sem(argv):
    from ..data.prepare import prepare_ade20k_sem

    a = _args("prepare_ade20k_sem_seg_novel", "ADEChallengeData2016", argv)
    return prepare_ade20k_sem(a.path, a.out_dir, a.nproc, a.subset)


def _ade_pan(argv, instances: bool = False):
    from ..data.prepare import prepare_ade20k_panoptic

    a = _args("prepare_ade20k_ins_seg_novel" if instances else "prepare_ade20k_pan_seg_novel", "ADEChallengeData2016", argv,
              lambda p: p.add_argument("--mapping", default=None, help="ade20k_instance_catid_mapping.txt (default: in the ADE folder)"))
    return prepare_ade20k_panoptic(a.path, instances=instances, mapping=a.mapping, nproc=a.nproc, subset=a.subset)


def _mask_cls(argv):
    from ..data.prepare import collect_label_counts

    p = argparse.ArgumentParser(prog="freeseg prepare mask_cls_collect")
    p.add_argument("gt_dir")
    p.add_argument("out_json", nargs="?", default=None, help="default: <gt_dir>_label_count.json (where loaders read it)")
    p.add_argument("--nproc", type=int, default=min(8, os.cpu_count() or 1))
    a = p.parse_args(list(argv))
    return {collect_label_counts(a.gt_dir, a.out_json, a.nproc): 1}


def _custom(argv):
    """Load every data set of a DATASETS.CUSTOM file once: derived files are written now (not by
    each process of a distributed run), and every error shows before a training starts."""
    from ..data.catalog import DatasetCatalog
    from ..data.custom import register_custom

    p = argparse.ArgumentParser(prog="freeseg prepare custom")
    p.add_argument("yaml_file", help="the data set file named in DATASETS.CUSTOM (docs/training.md)")
    a = p.parse_args(list(argv))
    names = register_custom(a.yaml_file)
    return {name: len(DatasetCatalog.get(name)) for name in names}


SCRIPTS: dict[str, Callable[[Sequence[str]], dict]] = {
    "prepare_coco_stuff_164k_sem_seg": _coco_stuff,
    "prepare_coco_alldata": _coco_all,
    "prepare_voc_sem_seg": _voc,
    "prepare_ade20k_sem_seg_novel": _ade_sem,
    "prepare_ade20k_pan_seg_novel": _ade_pan,
    "prepare_ade20k_ins_seg_novel": lambda argv: _ade_pan(argv, instances=True),
    "mask_cls_collect": _mask_cls,
    "custom": _custom,
}


def list_text() -> str:
    lines = [f"Built-in data sets (root $DETECTRON2_DATASETS = {dataset_root()}):"]
    for group, rows in LAYOUTS.items():
        lines.append(f"\n{group}")
        for names, layout, script in rows:
            lines.append(f"  {names}\n      layout: {layout}\n      prepare: {script}")
    lines.append("\nYour own data sets (a YAML file, DATASETS.CUSTOM: docs/training.md)\n"
                 "  `freeseg prepare custom mydata.yaml` loads each once, writing what it derives, and prints its size")
    lines.append("\nScripts: " + ", ".join(SCRIPTS))
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    from ..utils.errors import FreeSegError, closest

    argv = list(argv)
    if not argv or argv[0] in ("--list", "-l", "-h", "--help"):
        print(list_text() if argv and argv[0] in ("--list", "-l") else
              "usage: freeseg prepare (--list | <script> [path] [--nproc N] [--subset] | custom <yaml>)\n\n" + list_text())
        return 0
    name = argv[0].removesuffix(".py")
    if name not in SCRIPTS:
        hint = closest(name, SCRIPTS)
        raise FreeSegError(f"unknown preparation script '{name}'" + (f"; did you mean '{hint}'?" if hint else "")
                           + " (see `freeseg prepare --list`)")
    counts = SCRIPTS[name](argv[1:])
    for path, n in sorted(counts.items()):
        print(f"{path}: {n}")
    return 0
