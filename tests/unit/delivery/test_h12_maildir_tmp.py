"""Issue 12 item 6: files a killed delivery left in a Maildir's tmp/ are removed after
36 hours, by a later delivery to that Maildir, at most once an hour."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mailwright.delivery import maildir


def leftover(directory: Path, name: str, age_hours: float) -> Path:
    path = directory / "tmp" / name
    path.write_bytes(b"half a message")
    then = time.time() - age_hours * 3600
    os.utime(path, (then, then))
    return path


def test_delivery_removes_tmp_files_older_than_36_hours(tmp_path: Path) -> None:
    box = tmp_path / "Maildir"
    maildir.prepare(box)
    old = leftover(box, "old", 37)
    young = leftover(box, "young", 35)
    name = maildir.deliver(box, [b"Subject: x\n\nbody\n"], clean_tmp=True)
    assert not old.exists() and young.exists()
    assert (box / "new" / name).exists()


def test_cleanup_runs_once_an_hour_per_maildir(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    now = 1_000_000.0
    assert maildir.cleanup_due(first, now)
    assert not maildir.cleanup_due(first, now + 3599)
    assert maildir.cleanup_due(second, now + 10)
    assert maildir.cleanup_due(first, now + 3600)


def test_without_a_decision_the_first_delivery_cleans(tmp_path: Path) -> None:
    box = tmp_path / "fresh"
    maildir.prepare(box)
    old = leftover(box, "old", 48)
    maildir.deliver(box, [b"Subject: x\n\nbody\n"])  # first delivery here in this process
    assert not old.exists()
    again = leftover(box, "again", 48)
    maildir.deliver(box, [b"Subject: y\n\nbody\n"])  # within the hour: not looked at
    assert again.exists()
