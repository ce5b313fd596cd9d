"""A new Maildir appears whole (renamed into place with tmp/new/cur), an existing one is
completed, and a failure leaves nothing half-made behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailwright.delivery import maildir
from mailwright.delivery.mbox import MailboxError


def test_a_new_maildir_is_made_whole_without_leftovers(tmp_path: Path) -> None:
    box = tmp_path / "carol"
    name = maildir.deliver(box, [b"Subject: hi\n\nhello\n"])
    assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"]
    assert (box / "new" / name).read_bytes() == b"Subject: hi\n\nhello\n"
    assert os.listdir(tmp_path) == ["carol"]  # no staging directory left
    assert all((box / sub).stat().st_mode & 0o777 == 0o700 for sub in ("cur", "new", "tmp"))


def test_an_existing_maildir_gets_its_missing_subdirectories(tmp_path: Path) -> None:
    box = tmp_path / "dave"
    (box / "new").mkdir(parents=True)
    maildir.prepare(box)
    assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"]


def test_a_failure_names_the_maildir_and_leaves_nothing(tmp_path: Path) -> None:
    parent = tmp_path / "not-a-directory"
    parent.write_text("")
    with pytest.raises(MailboxError) as failed:
        maildir.prepare(parent / "erin")
    reply = failed.value.reply
    assert (reply.code, reply.status) == (451, "4.3.0")  # deferred: the mail stays queued
    assert f"{parent / 'erin'}: Not a directory" in reply.text
    assert os.listdir(tmp_path) == ["not-a-directory"]


def test_the_maildir_is_not_visible_before_its_subdirectories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = tmp_path / "frank"
    visible: list[bool] = []
    real_mkdir = os.mkdir

    def watching(path: Path, mode: int = 0o777) -> None:
        if not os.path.exists(path):  # a mail reader looking while each directory is made
            visible.append(box.exists())
        real_mkdir(path, mode)

    monkeypatch.setattr(maildir.os, "mkdir", watching)
    maildir.prepare(box)
    assert len(visible) == 4 and not any(visible)
    assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"]
