"""atomic_write: the target is replaced only by a complete file."""
from __future__ import annotations

from pathlib import Path

import pytest

from freeseg.utils.files import atomic_write


@pytest.mark.parametrize("durable", [True, False])
def test_complete_write_replaces_and_failed_write_leaves_the_old_file(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "pointer"
    with atomic_write(str(path), "w", durable=durable) as f:
        f.write("model_0000009.pth")
    assert path.read_text() == "model_0000009.pth"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(str(path), "w", durable=durable) as f:
            f.write("model_00")
            raise KeyboardInterrupt  # interrupted mid-write
    assert path.read_text() == "model_0000009.pth"  # the old content, whole
    assert [p.name for p in tmp_path.iterdir()] == ["pointer"]  # no temporary file left
