"""Atomic writes: all or nothing, and the usual file permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from celljepa._io import atomic_path, write_json_atomic


def test_atomic_write_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "a" / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600: others on a cluster can read it
    assert json.loads(path.read_text()) == {"x": 1}


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "f.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not (tmp_path / "new").exists()
