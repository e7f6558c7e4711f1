#!/usr/bin/env python3
"""FreeSeg's `datasets/prepare_voc_sem_seg.py`, kept under its name: a thin wrapper over
`freeseg prepare prepare_voc_sem_seg` (see `freeseg prepare prepare_voc_sem_seg --help`)."""
import sys

from freeseg.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("prepare", ["prepare_voc_sem_seg", *sys.argv[1:]]))
