"""A real full disk (a tiny tmpfs): a failed COMMIT fails the batch and loses nothing.

Needs root to mount the tmpfs; skipped otherwise.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage, NewMessage, StoreFullError
from tests.support.peers import is_root, require_peer

pytestmark = pytest.mark.root

MakeMessage = Callable[..., NewMessage]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    require_peer("root", is_root(), "mounts a tmpfs")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    require_peer("a tmpfs mount", mounted.returncode == 0, mounted.stderr.decode().strip())
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system has no space left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_commit_on_a_full_disk(tiny_fs: Path, make_message: MakeMessage) -> None:
    path = tiny_fs / "queue.db"
    store = SqliteQueueStore(path)
    store.open()
    try:
        kept = make_message()
        assert store.apply_batch([InsertMessage(kept)]) == [None]
        fill(tiny_fs / "filler")

        lost = [make_message(body=os.urandom(20_000)), make_message()]
        with pytest.raises(StoreFullError):
            store.apply_batch([InsertMessage(m) for m in lost])

        (tiny_fs / "filler").unlink()
        later = make_message()
        assert store.apply_batch([InsertMessage(later)]) == [None]  # usable again
    finally:
        store.close()

    reopened = SqliteQueueStore(path)
    reopened.open()
    try:
        assert {m.queue_id for m in reopened.list_messages()} == {kept.queue_id, later.queue_id}
    finally:
        reopened.close()
