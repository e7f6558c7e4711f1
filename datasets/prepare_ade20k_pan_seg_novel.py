#!/usr/bin/env python3
"""FreeSeg's `datasets/prepare_ade20k_pan_seg_novel.py`, kept under its name: a thin wrapper over
`freeseg prepare prepare_ade20k_pan_seg_novel` (see `freeseg prepare prepare_ade20k_pan_seg_novel --help`)."""
import sys

from freeseg.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("prepare", ["prepare_ade20k_pan_seg_novel", *sys.argv[1:]]))
