"""Issue 12 item 17: the LMTP listener answers each local recipient once it is delivered.

A real daemon delivering in the background, its LMTP listener, and one transaction to
five recipients: a good mailbox, a mailbox whose path is a directory, a mailbox over
its size limit, a domain the transport table refuses, and a remote address relayed to a
next hop that is down. The good one is answered 250 with the mail already in its
mailbox; the three others delivered (or refused) here get their own failure, and
neither a bounce nor a copy in our queue (the LMTP client owns them); the relayed one
is answered 250 as before, and stays queued.
"""

from __future__ import annotations

import fcntl
import mailbox
import time
from pathlib import Path
from typing import Any

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import RecipientState
from tests.support.daemon import Mailwright, free_port, wait_until
from tests.support.smtp import RawClient

MESSAGE = b"From: owner@mx.test\r\nSubject: lmtp outcomes\r\n\r\nHello.\r\n.\r\n"


def daemon(root: Path, **extra: Any) -> tuple[Mailwright, int, Path]:
    spool = root / "mail"
    spool.mkdir(parents=True)
    (spool / "broken").mkdir()  # an mbox path that is a directory
    (spool / "full").write_bytes(b"From x@y Thu Jan  1 00:00:00 1970\n\n" + b"x" * 4000 + b"\n\n")
    (root / "mailboxes").write_text(
        "good good\nbroken broken\nfull full\nowner owner\n"  # owner: the sender
    )
    (root / "transport").write_text(
        "remote.test smtp:[127.0.0.1]:9\n"  # the discard port: connection refused
        "closed.test error:5.7.1 No mail for this domain here\n"
    )
    lmtp = free_port()
    config: dict[str, Any] = {
        "delivery": {"mode": "background"},
        "routing": {"local_domains": ["mx.test"], "transport_table": str(root / "transport")},
        "local_delivery": {
            "mail_spool": str(spool),
            "virtual_mailbox_table": str(root / "mailboxes"),
            "mailbox_size_limit": 2000,
        },
        **extra,
    }
    mw = Mailwright(root / "mw", config)
    mw.config["listeners"] = [{"address": "127.0.0.1", "port": lmtp, "kind": "lmtp"}]
    return mw.start(), lmtp, spool


def send(port: int, recipients: list[str]) -> list[str]:
    c = RawClient(port)
    assert c.cmd("LHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<owner@mx.test>").startswith("250")
    for rcpt in recipients:
        assert c.cmd(f"RCPT TO:<{rcpt}>").startswith("250"), rcpt
    assert c.cmd("DATA").startswith("354")
    c.send(MESSAGE)
    replies = c.replies(len(recipients))
    c.cmd("QUIT")
    c.close()
    return replies


def mbox(path: Path) -> list[mailbox.mboxMessage]:
    if not path.is_file():
        return []
    box = mailbox.mbox(path, create=False)
    try:
        return list(box)
    finally:
        box.close()


def queued(mw: Mailwright) -> list[tuple[str, list[tuple[str, RecipientState]]]]:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return [
            (m.queue_id, [(r.address, r.state) for r in m.recipients])
            for m in store.list_messages()
        ]
    finally:
        store.close()


def test_each_local_recipient_gets_its_own_outcome_and_no_bounce(tmp_path: Path) -> None:
    mw, port, spool = daemon(tmp_path)
    try:
        good, broken, full, closed, remote = send(
            port,
            [
                "good@mx.test",
                "broken@mx.test",
                "full@mx.test",
                "who@closed.test",
                "someone@remote.test",
            ],
        )
        # delivered before the answer: the mail is in the mailbox as the 250 arrives
        assert good.startswith("250 2.0.0") and "Delivered" in good, good
        (msg,) = mbox(spool / "good")
        assert msg["Subject"] == "lmtp outcomes"
        assert broken[0] in "45" and not broken.startswith("250"), broken
        assert full.startswith("452 4.2.2"), full  # over its size limit
        assert closed == "550 5.7.1 No mail for this domain here", closed
        assert remote.startswith("250 2.0.0") and "accepted for delivery" in remote, remote
        # no bounce to the sender, and the failed recipients are no longer ours
        (only,) = queued(mw)
        qid, states = only
        assert dict(states)["someone@remote.test"] is RecipientState.QUEUED
        assert dict(states)["good@mx.test"] is RecipientState.DELIVERED
        assert dict(states)["broken@mx.test"] is RecipientState.FAILED
        assert dict(states)["full@mx.test"] is RecipientState.FAILED
        assert dict(states)["who@closed.test"] is RecipientState.FAILED
        assert not mbox(spool / "owner")
        assert mw.wait_log("returned to the LMTP client (no bounce): 452")
        assert not any(f"{qid}: " in line and ": DSN" in line for line in mw.log)
    finally:
        mw.stop()


def test_past_the_deadline_the_recipient_is_answered_250_and_stays_ours(tmp_path: Path) -> None:
    # good's mailbox is locked by its user: the delivery waits for the lock longer than
    # the LMTP client is made to wait; the client gets 250, the recipient stays ours
    mw, port, spool = daemon(tmp_path, server={"timeouts": {"lmtp_delivery": 1}})
    try:
        with (spool / "good").open("ab") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            started = time.monotonic()
            (good,) = send(port, ["good@mx.test"])
            assert time.monotonic() - started >= 1
            assert good.startswith("250 2.0.0") and "accepted for delivery" in good, good
            (only,) = queued(mw)
            assert only[1] == [("good@mx.test", RecipientState.QUEUED)]
            assert not mbox(spool / "good")
        # the lock is released: the delivery that was waiting for it ends, as ours
        wait_until(lambda: len(mbox(spool / "good")) == 1, what="delivery after the lock")
        wait_until(lambda: not queued(mw), what="the message done")
    finally:
        mw.stop()


def test_queue_only_mode_answers_at_the_commit(tmp_path: Path) -> None:
    mw, port, spool = daemon(tmp_path, delivery={"mode": "queue"})
    try:
        good, broken = send(port, ["good@mx.test", "broken@mx.test"])
        assert "accepted for delivery" in good and "accepted for delivery" in broken
        assert not mbox(spool / "good")
    finally:
        mw.stop()
