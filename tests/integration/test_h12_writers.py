"""Issue 12 item 1 (throughput): a root daemon writes Maildirs and files as the recipient
through long-lived user writers (``delivery.writerpool``), not a new interpreter per
message. Real daemon as root, real SMTP, real writer processes found in /proc."""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import signal
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Mailwright, deep_merge, wait_until
from tests.support.opentmp import open_tmp

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: writers change user")

PROMPT = 20.0


@pytest.fixture
def shared() -> Iterator[Path]:
    with open_tmp("mw-h12w-") as path:
        yield path


def daemon(shared: Path, extra: dict[str, Any] | None = None) -> Mailwright:
    """Root daemon; the virtual Maildir user carol, owned by nobody."""
    (shared / "mailboxes").write_text("carol carol/\n")
    (shared / "mail").mkdir(mode=0o755)
    config: dict[str, Any] = {
        "delivery": {"mode": "background"},
        "routing": {"local_domains": ["mx.test"]},
        "local_delivery": {
            "mail_spool": str(shared / "mail"),
            "virtual_mailbox_table": str(shared / "mailboxes"),
            "virtual_user": "nobody",
            "lock_timeout": 60.0,
        },
    }
    return Mailwright(shared / "mw", deep_merge(config, extra or {}))


def message(n: int) -> bytes:
    return f"From: s@example.com\r\nTo: carol@mx.test\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()


def writers_of(pid: int) -> list[int]:
    """The daemon's user writers: its children running ``delivery.userwriter``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = re.search(r"^PPid:\s+(\d+)", status, re.M)
        if ppid and int(ppid.group(1)) == pid and b"mailwright.delivery.userwriter" in cmdline:
            found.append(int(entry.name))
    return found


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M)
    assert match
    return max(int(x) for x in match.groups())  # real, effective, saved, fs: none is root


def writer_pids(new: Path) -> list[int]:
    """The writer of each message, from its Maildir name (``...P<pid>Q<n>...``)."""
    return [int(m.group(1)) for p in new.iterdir() if (m := re.search(r"P(\d+)Q", p.name))]


def test_many_maildir_deliveries_share_one_writer_that_is_never_root(shared: Path) -> None:
    mw = daemon(shared).start()
    new = shared / "mail" / "carol" / "new"
    count = lambda: len(list(new.iterdir())) if new.is_dir() else 0  # noqa: E731
    try:
        assert mw.proc is not None
        with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
            for n in range(4):  # one after another: each finds the writer idle
                assert s.sendmail("s@example.com", ["carol@mx.test"], message(n)) == {}
                wait_until(lambda n=n: count() == n + 1, PROMPT, f"message {n}")
        pids = set(writer_pids(new))
        assert len(pids) == 1 and mw.proc.pid not in pids, pids  # one writer, not the daemon
        (writer,) = pids
        assert writers_of(mw.proc.pid) == [writer]  # still there, waiting for the next one
        assert uid_of(writer) == pwd.getpwnam("nobody").pw_uid
        with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
            for n in range(4, 16):  # a burst: several writers at most, reused
                assert s.sendmail("s@example.com", ["carol@mx.test"], message(n)) == {}
        wait_until(lambda: count() == 16, PROMPT, "16 messages")
        assert len(set(writer_pids(new))) <= 4  # writerpool.PER_IDENTITY, not one per message
        live = writers_of(mw.proc.pid)
        assert live and mw.stop() == 0
        assert not [line for line in mw.log if "Traceback" in line or "Exception" in line]
        gone = lambda: not any(Path(f"/proc/{pid}").exists() for pid in live)  # noqa: E731
        wait_until(gone, PROMPT, "the writers to end with the daemon")
    finally:
        mw.stop()


def test_a_killed_writer_defers_its_delivery_and_the_next_one_is_delivered(shared: Path) -> None:
    box = shared / "file.mbox"
    box.touch()
    os.chown(box, pwd.getpwnam("nobody").pw_uid, -1)
    (shared / "aliases").write_text(f"postmaster: root\nfile: {box}\n")
    mw = daemon(shared, {"routing": {"alias_file": str(shared / "aliases")}}).start()
    try:
        assert mw.proc is not None
        with open(box, "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # the writer waits: the delivery is in flight
            with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
                assert s.sendmail("s@example.com", ["file@mx.test"], message(1)) == {}
            wait_until(lambda: len(writers_of(mw.proc.pid)) == 1, PROMPT, "a writer")  # type: ignore[union-attr]
            (writer,) = writers_of(mw.proc.pid)
            os.kill(writer, signal.SIGKILL)
            line = mw.wait_log(f"to={box}", PROMPT)
            assert "dsn=4.3.0, stat=Deferred: 451 4.3.0" in line, line
        with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
            assert s.sendmail("s@example.com", ["file@mx.test"], message(2)) == {}
        wait_until(lambda: b"Subject: m2" in box.read_bytes(), PROMPT, "the next message")
        assert b"Subject: m1" not in box.read_bytes()  # the killed one is queued, not half there
        new = writers_of(mw.proc.pid)
        assert len(new) == 1 and new != [writer]
    finally:
        mw.stop()
