"""The maildrop file format: written safely, read with suspicion."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from mailwright.core.submission import Rcpt, SubmissionEnvelope
from mailwright.queue import maildrop

ENVELOPE = SubmissionEnvelope(
    "root@mx.test",
    [Rcpt("a@x.test", "SUCCESS", "rfc822;a@x.test"), Rcpt("b@x.test")],
    ret="HDRS",
    envid="e1",
    body_type="8BITMIME",
)
MESSAGE = b"Subject: s\r\n\r\nbody \xc3\xa9\r\n"


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    directory = tmp_path / "maildrop"
    maildrop.prepare(str(directory))
    return directory


def test_prepare_makes_a_sticky_world_writable_directory(drop: Path) -> None:
    assert stat.S_IMODE(drop.stat().st_mode) == 0o1733
    drop.chmod(0o700)
    maildrop.prepare(str(drop))
    assert stat.S_IMODE(drop.stat().st_mode) == 0o1733


def test_round_trip(drop: Path) -> None:
    path = maildrop.write(str(drop), ENVELOPE, MESSAGE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert maildrop.pending(str(drop)) == [path]
    with maildrop.open_entry(path) as entry:
        assert entry.uid == os.getuid()
        assert entry.size == len(MESSAGE)
        assert b"".join(entry.chunks(chunk_size=5)) == MESSAGE
        env = entry.envelope
        assert env.sender == "root@mx.test" and env.ret == "HDRS" and env.envid == "e1"
        assert [(r.address, r.notify, r.orcpt) for r in env.recipients] == [
            ("a@x.test", "SUCCESS", "rfc822;a@x.test"),
            ("b@x.test", None, None),
        ]
        assert env.body_type == "8BITMIME" and not env.smtputf8


def test_names_are_unique_and_hidden_files_skipped(drop: Path) -> None:
    paths = {maildrop.write(str(drop), ENVELOPE, MESSAGE) for _ in range(20)}
    assert len(paths) == 20
    (drop / ".partial").write_bytes(b"x")
    assert set(maildrop.pending(str(drop))) == paths


def test_a_file_shorter_than_declared_is_incomplete(drop: Path) -> None:
    path = Path(maildrop.write(str(drop), ENVELOPE, MESSAGE))
    whole = path.read_bytes()
    for cut in (5, len(maildrop.MAGIC) + 3, len(whole) - 1):
        path.write_bytes(whole[:cut])
        with pytest.raises(maildrop.IncompleteError):
            maildrop.open_entry(str(path))


def test_a_file_longer_than_declared_is_refused(drop: Path) -> None:
    path = Path(maildrop.write(str(drop), ENVELOPE, MESSAGE))
    with path.open("ab") as f:
        f.write(b"extra")
    with pytest.raises(maildrop.MaildropError, match="longer"):
        maildrop.open_entry(str(path))


@pytest.mark.parametrize(
    "content",
    [
        b"garbage\n",
        maildrop.MAGIC + b"not json\n",
        maildrop.MAGIC + b'{"sender": "a@b", "recipients": [], "size": 0}\n',
        maildrop.MAGIC + b'{"sender": 5, "recipients": [{"address": "a@b"}], "size": 0}\n',
        maildrop.MAGIC + b'{"sender": "", "recipients": [{"address": "a@b"}], "size": -1}\n',
        maildrop.MAGIC + b'{"sender": "", "recipients": [{"address": "a@b"}]}\n',
    ],
)
def test_malformed_files_are_refused(drop: Path, content: bytes) -> None:
    path = drop / "bad"
    path.write_bytes(content)
    with pytest.raises(maildrop.MaildropError) as info:
        maildrop.open_entry(str(path))
    assert not isinstance(info.value, maildrop.IncompleteError)


def test_symlinks_hard_links_and_non_files_are_refused(drop: Path, tmp_path: Path) -> None:
    real = Path(maildrop.write(str(drop), ENVELOPE, MESSAGE))
    link = drop / "symlink"
    link.symlink_to(real)
    with pytest.raises(maildrop.MaildropError, match="symbolic link"):
        maildrop.open_entry(str(link))
    hard = drop / "hardlink"
    os.link(real, hard)
    with pytest.raises(maildrop.MaildropError, match="2 links"):
        maildrop.open_entry(str(hard))
    fifo = drop / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(maildrop.MaildropError, match="not a regular file"):
        maildrop.open_entry(str(fifo))


def test_the_owner_not_the_content_names_the_user(drop: Path) -> None:
    path = Path(maildrop.write(str(drop), ENVELOPE, MESSAGE))
    head, _, rest = path.read_bytes()[len(maildrop.MAGIC) :].partition(b"\n")
    meta = json.loads(head)
    meta["uid"] = 12345
    path.write_bytes(maildrop.MAGIC + json.dumps(meta).encode() + b"\n" + rest)
    with maildrop.open_entry(str(path)) as entry:
        assert entry.uid == os.getuid()


def test_oldest_first(drop: Path) -> None:
    first = maildrop.write(str(drop), ENVELOPE, MESSAGE)
    second = maildrop.write(str(drop), ENVELOPE, MESSAGE)
    now = time.time()
    os.utime(first, (now, now))
    os.utime(second, (now - 100, now - 100))
    assert maildrop.pending(str(drop)) == [second, first]


def test_write_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        maildrop.write(str(tmp_path / "missing"), ENVELOPE, MESSAGE)
