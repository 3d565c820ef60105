import json
import os
import stat
from pathlib import Path

import pytest

from embedlab.files import write_json_atomic, write_text_atomic


def test_atomic_write_has_the_permissions_open_would_give(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "report.md", "# report\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "# report\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "figures.json", {"ndcg@10": 0.5})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"ndcg@10": float("nan")})  # NaN is not JSON: refused before the rename
    assert json.loads(path.read_text()) == {"ndcg@10": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["figures.json"]
