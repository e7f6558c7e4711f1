#!/usr/bin/env python3
"""FreeSeg's ``tools/mask_cls_collect.py <gt_dir> [out.json]``: per label map, the sorted classes
present (255 excluded). The default output, ``<gt_dir>_label_count.json``, is where the stage-1
loaders read it (the original README wrote it elsewhere)."""
import sys

from freeseg.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("prepare", ["mask_cls_collect", *sys.argv[1:]]))
