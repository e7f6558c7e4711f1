#!/usr/bin/env python
"""FreeSeg's training entry point, kept for its users: the same as ``freeseg train``.

    python train_net.py --config-file FILE [--num-gpus N] [--eval-only] [--resume] [KEY VALUE ...]

Works from a source checkout without installing (this folder is on ``sys.path``) and under
``torchrun --nproc_per_node N train_net.py ...``.
"""
import sys

from freeseg.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("train", sys.argv[1:], prog="train_net.py"))
