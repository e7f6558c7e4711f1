"""tools/mask_cls_collect.py as a script: label counts, and one-line errors for bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "mask_cls_collect.py"), *args, "--nproc", "1"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def _labels(folder: Path) -> Path:
    folder.mkdir()
    for i, value in enumerate((3, 7)):
        lab = np.full((8, 8), 255, np.uint8)
        lab[:4] = value
        Image.fromarray(lab).save(folder / f"{i}.png")
    return folder


def test_output_json_in_a_new_folder_is_written(tmp_path: Path) -> None:
    gt = _labels(tmp_path / "gt")
    out = tmp_path / "not" / "yet" / "counts.json"
    result = _run(str(gt), str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == {"0.png": [3], "1.png": [7]}


def test_corrupt_label_map_is_one_line_naming_it(tmp_path: Path) -> None:
    gt = _labels(tmp_path / "gt")
    (gt / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    result = _run(str(gt))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: label map ") and "1.png cannot be read" in last
    assert "Traceback" not in result.stderr
