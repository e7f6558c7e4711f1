#!/usr/bin/env python3
"""FreeSeg's `datasets/prepare_coco_alldata.py`, kept under its name: a thin wrapper over
`freeseg prepare prepare_coco_alldata` (see `freeseg prepare prepare_coco_alldata --help`)."""
import sys

from freeseg.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("prepare", ["prepare_coco_alldata", *sys.argv[1:]]))
