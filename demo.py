#!/usr/bin/env python
"""The demo entry point (FreeSeg itself has none), next to train_net.py: the same as ``freeseg demo``.

    python demo.py --config-file FILE --input IMAGES... --output DIR [--opts KEY VALUE ...]

Run ``python demo.py --help`` for the options.
"""
import sys

from freeseg.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("demo", sys.argv[1:], prog="demo.py"))
