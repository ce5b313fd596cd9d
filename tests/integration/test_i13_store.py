"""Issue 13 section 3: command-line writes of the queue never open a second writer beside
the daemon. With the daemon running, ``sendmail -q`` has the daemon do its flush (the
control socket's ``admin`` request); without one, ``mailwright queue ...`` holds the
queue's master lock while it writes, and refuses when a daemon holds the queue but does
not answer. Real daemons, the real CLI and sendmail as subprocesses."""

from __future__ import annotations

import re
import smtplib
from pathlib import Path

from mailwright.daemon.queuelock import QueueLock
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import MessageState
from tests.support.daemon import Mailwright
from tests.support.sendmail import Tools

QID = re.compile(r"\b([0-9A-HJKMNP-TV-Z]{15})\b")


def queue_one(port: int) -> str:
    """A message queued for a local recipient (the test daemons run in queue-only mode)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("sender@x.test")[0] == 250
        assert client.rcpt("user@mx.test")[0] == 250
        code, text = client.data(b"Subject: one\r\n\r\nbody\r\n")
        assert code == 250
    match = QID.search(text.decode())
    assert match is not None
    return match.group(1)


def state_of(mw: Mailwright, queue_id: str) -> MessageState | None:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        message = store.get_message(queue_id)
        return None if message is None else message.state
    finally:
        store.close()


def test_sendmail_q_has_the_running_daemon_do_the_flush(tmp_path: Path) -> None:
    mw = Mailwright(tmp_path, {"log": {"format": "text"}}).start()
    try:
        tools = Tools(mw, tmp_path / "bin")
        queue_one(mw.port)
        proc = tools.run("-v", "-q")
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout == b"queue run: 1 recipient(s) due now\n"
        # the daemon made the recipients due itself, and says who asked and how
        mw.wait_log("admin=flush, by=root, via=sendmail -q, scope=queue, scheduled=1")
        mw.wait_log("queue run (full) done: ")
    finally:
        mw.stop()


def test_without_a_daemon_a_command_writes_only_holding_the_queue_lock(tmp_path: Path) -> None:
    mw = Mailwright(tmp_path).start()
    try:
        queue_id = queue_one(mw.port)
    finally:
        mw.stop()
    # a daemon that holds the queue but does not answer its control socket
    lock = QueueLock(Path(mw.config["queue"]["directory"]))
    lock.acquire()
    try:
        refused = mw.cli("queue", "hold", queue_id)
        assert refused.returncode == 75, refused.stderr
        assert b"holds the queue but did not answer" in refused.stderr
        assert state_of(mw, queue_id) is MessageState.ACTIVE  # nothing written beside it
    finally:
        lock.release()
    held = mw.cli("queue", "hold", queue_id)
    assert held.returncode == 0, held.stderr
    assert state_of(mw, queue_id) is MessageState.HOLD
    # the command let go of the lock: a daemon starts on the queue again
    mw.start()
    mw.stop()
