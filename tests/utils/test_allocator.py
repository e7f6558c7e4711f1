"""glibc malloc tuning (freeseg.utils.allocator): on by default in the commands, off on request."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = """
from freeseg.cli.main import run_command
from freeseg.utils import allocator
run_command("prepare", ["--help"])  # any command sets it up before running
print(allocator._done)
# an inference-like pattern: each op makes a fresh 64 MiB tensor and frees the previous one;
# once the first rounds have grown the heap, kept memory means no page is faulted in again.
# The fewest faults of 3 rounds: now and then glibc places a block past the ones it kept and
# the heap grows once more (1 run in ~16 saw one 64 MiB block fault in a round).
import resource, torch
def work():
    x = torch.ones(16 * 2**20)
    for _ in range(4):
        x = x * 2 + 1
for _ in range(2):
    work()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    work()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
@pytest.mark.parametrize("setting", ["", "default"])
def test_commands_keep_freed_memory_unless_told_not_to(setting):
    env = {**os.environ, "FREESEG_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    done, faults = out.stdout.split()[-2:]
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    if setting == "default":
        assert done == "False" and int(faults) >= pages  # glibc unmapped the blocks: faulted in again
    else:
        assert done == "True" and int(faults) < pages // 100
