"""atomic_write's durability switch: ``fsync=True`` puts the complete new bytes on disk before the rename."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import pytest

from voiceid import atomic
from voiceid.atomic import atomic_write


def journal(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record every fsync (the file behind the fd, its inode, its bytes on the fd) and every rename, in order."""
    events: list[tuple[Any, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        # os.pread reads what the kernel holds, not Python's buffer: bytes still buffered are not synced.
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), st.st_ino, os.pread(fd, st.st_size + 1, 0)))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", os.fspath(src), os.stat(src).st_ino, os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return events


@pytest.mark.parametrize("binary", [True, False])
def test_fsync_syncs_the_whole_new_file_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: bool) -> None:
    target = tmp_path / "store.npz"
    target.write_bytes(b"old")
    events = journal(monkeypatch)
    head, tail = "x" * 100_000, "end"  # the head goes straight to the OS; the tail sits in Python's buffer
    payload = head + tail

    def write(f: IO[Any]) -> None:
        for part in (head, tail):
            f.write(part.encode() if binary else part)

    atomic_write(target, write, binary=binary, fsync=True)

    assert target.read_text() == payload
    assert [e[0] for e in events] == ["fsync", "replace"], events  # synced first, then renamed
    (_, synced_path, synced_ino, synced_bytes), (_, src, renamed_ino, dst) = events
    assert synced_path == src and synced_ino == renamed_ino == target.stat().st_ino  # the very file that was renamed in
    assert synced_bytes == payload.encode()  # all of it: flushed out of Python's buffer before the fsync
    assert dst == str(target) and Path(src).parent == tmp_path and not Path(src).exists()


def test_without_fsync_nothing_is_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = journal(monkeypatch)
    atomic_write(tmp_path / "cache.npy", lambda f: f.write(b"rebuilt when invalid"))
    assert [e[0] for e in events] == ["replace"]  # a cache pays for no disk flush
    assert (tmp_path / "cache.npy").read_bytes() == b"rebuilt when invalid"
