"""Durability: every message answered 250 survives SIGKILL.

Disk full answers 452 and keeps nothing.
"""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright
from tests.support.peers import is_root, peer
from tests.support.smtp import RawClient


def body_for(n: int, size: int) -> bytes:
    line = b"line %06d of a durable message, padding padding padding\r\n" % n
    # a complete header: the daemon adds nothing for a loopback client (issue 12 item 14)
    header = b"From: s@x.test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    header += b"Message-ID: <crash%d@x.test>\r\nSubject: crash %d\r\n\r\n" % (n, n)
    return header + line * max(1, size // len(line))


class Sender(threading.Thread):
    """Sends messages until the connection breaks; records each acknowledged one."""

    def __init__(
        self, port: int, seed: int, acked: list[tuple[str, str]], cond: threading.Condition
    ):
        super().__init__(daemon=True)
        self.port, self.rng, self.acked, self.cond = port, random.Random(seed), acked, cond

    def run(self) -> None:
        try:
            self._send_until_broken()
        finally:
            with self.cond:
                self.cond.notify_all()

    def _send_until_broken(self) -> None:
        try:
            c = RawClient(self.port)
            c.cmd("EHLO crash.test")
            for n in range(100000):
                # 50 KB and 300 KB go to the body log, 300 KB through a spool file first
                body = body_for(n, self.rng.choice([500, 5000, 50_000, 300_000]))
                c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
                if [r[:3] for r in c.replies(3)] != ["250", "250", "354"]:
                    return
                c.send(body + b".\r\n")
                reply = c.reply()
                if not reply.startswith("250 "):
                    return
                with self.cond:
                    self.acked.append((reply.split()[2], hashlib.sha256(body).hexdigest()))
                    self.cond.notify_all()
        except (OSError, ConnectionError):
            return


def stored_digest(store: SqliteQueueStore, qid: str) -> str | None:
    msg = store.get_message(qid)
    if msg is None:
        return None
    headers = store.read_headers(qid)
    assert headers[0].name == "Received"
    raw = b"".join(h.encode() for h in headers[1:]) + b"\r\n" + b"".join(store.read_body(qid))
    return hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_loses_no_acknowledged_message(tmp_path: Path, round_: int) -> None:
    mw = Mailwright(tmp_path).start()
    acked: list[tuple[str, str]] = []
    cond = threading.Condition()
    senders = [Sender(mw.port, round_ * 10 + i, acked, cond) for i in range(4)]
    for s in senders:
        s.start()
    target = random.Random(round_).randint(5, 60)
    # wait for a random number of acknowledgements, then kill without warning
    with cond:
        cond.wait_for(lambda: len(acked) >= target or not any(s.is_alive() for s in senders), 120)
    assert mw.proc is not None
    mw.proc.send_signal(signal.SIGKILL)
    mw.proc.wait()
    for s in senders:
        s.join(30)
    with cond:
        snapshot = list(acked)
    assert len(snapshot) >= target
    mw.proc = None
    mw.start()  # start-up checks the queue and cleans leftovers
    mw.stop()
    store = SqliteQueueStore(tmp_path / "queue" / "queue.db")
    store.open_for_reading()
    try:
        missing = [qid for qid, digest in snapshot if stored_digest(store, qid) != digest]
    finally:
        store.close()
    assert missing == []
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []


@peer("root", is_root(), "mounts a small tmpfs")
def test_disk_full_answers_452_and_recovers(tmp_path: Path) -> None:
    qdir = tmp_path / "queue"
    qdir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(qdir)], check=True)
    try:
        mw = Mailwright(tmp_path).start()
        try:
            filler = qdir / "filler"
            c = RawClient(mw.port)
            c.cmd("EHLO full.test")
            big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1500  # ~1.5 MB
            # fill the file system until less than one message fits
            with filler.open("wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            reply = c.message(big)
            assert reply.startswith("452 4.3.1"), reply
            filler.unlink()
            ok = c.message(b"Subject: small\r\n\r\nfits now\r\n")
            assert ok.startswith("250 2.0.0"), ok
        finally:
            mw.stop()
        store = SqliteQueueStore(qdir / "queue.db")
        store.open_for_reading()
        try:
            assert store.count_messages() == 1
        finally:
            store.close()
    finally:
        subprocess.run(["umount", "-l", str(qdir)], check=False)


def test_a_failed_commit_answers_451_keeps_nothing_and_the_next_message_goes(
    tmp_path: Path,
) -> None:
    # another program (an administrator's sqlite3 shell) holds the queue's write lock
    # longer than the writer's busy timeout (5 s): the commit fails, the client is told
    mw = Mailwright(tmp_path).start()
    try:
        c = RawClient(mw.port)
        c.cmd("EHLO lock.test")
        blocker = sqlite3.connect(tmp_path / "queue" / "queue.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        reply = c.message(b"Subject: locked out\r\n\r\nnot kept\r\n")
        blocker.execute("ROLLBACK")
        blocker.close()
        assert reply == "451 4.3.0 Local error in processing, try again later", reply
        mw.wait_log("queue commit failed")
        ok = c.message(b"Subject: after\r\n\r\nkept\r\n")
        assert ok.startswith("250 2.0.0"), ok
        c.cmd("QUIT")
    finally:
        mw.stop()
    store = SqliteQueueStore(tmp_path / "queue" / "queue.db")
    store.open_for_reading()
    try:
        assert [m.subject for m in store.list_messages()] == ["after"]
    finally:
        store.close()
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []  # no spooled body left
