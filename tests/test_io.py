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


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_write_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    target = write_json_atomic(tmp_path / "m.json", {"a": 1})
    assert str(tmp_path) in synced  # the folder's entry (the rename) reached the disk
    assert any(p.startswith(str(tmp_path / ".m.json~")) for p in synced)  # the data, before the rename
    assert synced.index(str(tmp_path)) == len(synced) - 1
    assert json.loads(target.read_text()) == {"a": 1}


def test_temporary_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path, caplog):
    from celljepa._io import _HOST

    pid = _dead_pid()
    stale = tmp_path / f".m.json~{_HOST}~{pid}~abc123.json.tmp"
    stale.write_text("half")
    alive = tmp_path / f".m.json~{_HOST}~{os.getpid()}~def456.json.tmp"  # a live writer: kept
    alive.write_text("busy")
    other_host = tmp_path / f".m.json~elsewhere~{pid}~ghi789.json.tmp"  # cannot tell: kept
    other_host.write_text("?")
    with caplog.at_level("WARNING", logger="celljepa"):
        write_json_atomic(tmp_path / "m.json", {"a": 1})
    assert not stale.exists() and alive.exists() and other_host.exists()
    assert f"left by process {pid}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.json", alive.name, other_host.name])


def test_folder_lock_refuses_a_second_writer_and_names_the_holder(tmp_path):
    from celljepa._errors import InputError
    from celljepa._io import LOCK_NAME, folder_lock

    out = tmp_path / "run"
    with folder_lock(out):
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(InputError, match=rf"--out '{out}' is in use by process {os.getpid()} on .*Fix: wait"):
            with folder_lock(out):
                pass
    assert not (out / LOCK_NAME).exists() and out.is_dir()
    with folder_lock(out):  # free again
        pass


def test_folder_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    from celljepa._io import _HOST, LOCK_NAME, folder_lock

    out = tmp_path / "run"
    out.mkdir()
    pid = _dead_pid()
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": _HOST, "started": "x", "command": "celljepa"}))
    with caplog.at_level("WARNING", logger="celljepa"), folder_lock(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"locked by process {pid}" in caplog.text


def test_folder_lock_on_a_file_or_an_unwritable_folder_is_a_clear_error(tmp_path):
    from celljepa._errors import InputError
    from celljepa._io import folder_lock

    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        with folder_lock(tmp_path / "f"):
            pass
    with pytest.raises(InputError, match="a part of the path is a file"):
        with folder_lock(tmp_path / "f" / "run"):
            pass


def test_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    """A read-only folder (simulated: root may write anywhere) ends in an InputError, for a run and a file."""
    from pathlib import Path

    from celljepa._errors import InputError
    from celljepa._io import folder_lock

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(InputError, match="cannot be created: permission denied"):
        with folder_lock(tmp_path / "ro" / "run"):
            pass
    with pytest.raises(InputError, match="permission denied. Fix"):
        write_json_atomic(tmp_path / "ro" / "m.json", {})
