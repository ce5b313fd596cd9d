"""Queue runs against a real daemon and a real peer (smtp-sink): in queue-only mode a
selective run (``-qI``/``-qR``/``-qS``, ``queue flush ID|--recipient|--sender``) delivers
only the selected messages, a full run (``-q``, ``queue flush``, the configured interval)
everything; background mode is unchanged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.queue.store import StoredMessage
from tests.support import smtp_sink
from tests.support.daemon import Mailwright
from tests.support.peers import peer
from tests.support.sendmail import Tools, short_tmp

pytestmark = peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")


@pytest.fixture
def sink() -> Iterator[smtp_sink.SmtpSink]:
    with short_tmp() as root:
        peer = smtp_sink.SmtpSink(root / "sink").start()
        try:
            yield peer
        finally:
            peer.stop()


def start(root: Path, sink: smtp_sink.SmtpSink, delivery: dict[str, object]) -> Tools:
    root.mkdir(parents=True, exist_ok=True)
    table = root / "transport"
    table.write_text(f"* smtp:[127.0.0.1]:{sink.port}\n")
    mw = Mailwright(
        root,
        {
            "routing": {"transport_table": str(table)},
            "delivery": {"idle_connection_timeout": 0.5, **delivery},
            "queue": {"host_status_timeout": 0},
        },
    )
    mw.start()
    return Tools(mw, root / "bin")


@pytest.fixture
def queue_only(sink: smtp_sink.SmtpSink) -> Iterator[Tools]:
    with short_tmp() as root:
        tools = start(root, sink, {"mode": "queue"})
        try:
            yield tools
        finally:
            tools.mw.stop()


def queued(tools: Tools, *args: str) -> str:
    """Submit with ``sendmail -v``; the queue id it reports (the message may be gone by
    the time the queue could be read: delivered)."""
    proc = tools.run("-v", *args, input=b"Subject: run me\n\nbody\n")
    assert proc.returncode == 0, proc.stderr.decode()
    last = proc.stdout.decode().splitlines()[-1]
    assert last.startswith("queued in the queue as "), proc.stdout
    return last.rsplit(" ", 1)[-1]


def sent(tools: Tools, queue_id: str) -> list[str]:
    return [line for line in tools.mw.log if f"{queue_id}: to=<" in line and "stat=Sent" in line]


def mailwright(tools: Tools, *args: str) -> None:
    proc = tools.mw.cli(*args)
    assert proc.returncode == 0, proc.stderr.decode()


@pytest.mark.parametrize(
    "how",
    ["-qI", "-qR", "-qS", "queue flush ID", "queue flush --id", "queue flush --recipient"],
)
def test_a_selective_run_in_queue_mode_delivers_only_the_selection(
    queue_only: Tools, sink: smtp_sink.SmtpSink, how: str
) -> None:
    a = queued(queue_only, "-f", "alice@x.test", "postmaster@remote.test")
    b = queued(queue_only, "-f", "bob@x.test", "root@other.test")
    mailwright(queue_only, "queue", "hold", b)
    mailwright(queue_only, "queue", "release", b)  # wakes the daemon: no delivery
    if how.startswith("-q"):
        value = {"-qI": a[-7:].lower(), "-qR": "remote.test", "-qS": "alice"}[how]
        proc = queue_only.run("-v", how + value)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == b"queue run: 1 recipient(s) due now\n"
    elif how == "queue flush ID":
        mailwright(queue_only, "queue", "flush", a)
    elif how == "queue flush --id":
        mailwright(queue_only, "queue", "flush", "--id", a[-6:])
    else:
        mailwright(queue_only, "queue", "flush", "--recipient", "postmaster@")
    queue_only.mw.wait_log("queue run (1 message(s)) done: 1 recipient(s) tried")
    assert len(sent(queue_only, a)) == 1
    assert sent(queue_only, b) == []
    assert queue_only.queue_ids() == {b}
    # the full run delivers the rest
    assert queue_only.run("-q").returncode == 0
    queue_only.mw.wait_log("queue run (full) done: 1 recipient(s) tried")
    assert len(sent(queue_only, b)) == 1 and len(sent(queue_only, a)) == 1
    senders = sorted(m.mail_args.split()[0] for m in sink.messages())
    assert senders == ["<alice@x.test>", "<bob@x.test>"]


def test_the_configured_interval_runs_the_whole_queue(sink: smtp_sink.SmtpSink) -> None:
    with short_tmp() as root:
        tools = start(root, sink, {"mode": "queue", "queue_run_interval": 0.5})
        try:
            a = queued(tools, "postmaster@remote.test")
            b = queued(tools, "root@other.test")
            tools.mw.wait_log(f"{a}: to=<")
            tools.mw.wait_log(f"{b}: to=<")
            assert sent(tools, a) and sent(tools, b)
        finally:
            tools.mw.stop()


def test_background_mode_is_unchanged(sink: smtp_sink.SmtpSink) -> None:
    with short_tmp() as root:
        tools = start(root, sink, {"mode": "background"})
        try:
            a = queued(tools, "postmaster@remote.test")
            b = queued(tools, "root@other.test")
            tools.mw.wait_log(f"{a}: to=<")  # at once, with no queue run
            tools.mw.wait_log(f"{b}: to=<")
            sink.stop()  # the next one is deferred
            c = queued(tools, "postmaster@remote.test")
            tools.mw.wait_log(f"{c}: to=<")
            sink.start()
            proc = tools.run("-v", "-qI" + c[-7:])
            assert proc.stdout == b"queue run: 1 recipient(s) due now\n"
            tools.mw.wait_log(f"{c}: to=<", occurrence=2)
            assert sent(tools, c) and sent(tools, a) and sent(tools, b)
            assert not any("queue run (" in line for line in tools.mw.log)
        finally:
            tools.mw.stop()


# ---- sendmail -odq / -odd (queue only) and -odi (interactive) --------------------------------
@pytest.fixture
def background(sink: smtp_sink.SmtpSink) -> Iterator[Tools]:
    with short_tmp() as root:
        tools = start(root, sink, {"mode": "background"})
        try:
            yield tools
        finally:
            tools.mw.stop()


def stored(tools: Tools, queue_id: str) -> StoredMessage | None:
    store = tools.store()
    try:
        return store.get_message(queue_id)
    finally:
        store.close()


@pytest.mark.parametrize("flag", ["-odq", "-odd", "-ODeliveryMode=queue"])
def test_odq_waits_for_the_next_queue_run(background: Tools, flag: str) -> None:
    before = time.time()
    waiting = queued(background, flag, "postmaster@remote.test")
    now = queued(background, "root@other.test")  # -odb, the default: delivered at once
    background.mw.wait_log(f"{now}: to=<root@other.test>")
    message = stored(background, waiting)
    assert message is not None
    (rcpt,) = message.recipients
    assert rcpt.attempts == 0 and rcpt.next_attempt >= before + 300  # queue.first_retry
    assert sent(background, waiting) == []
    _, parsed, _ = background.read(waiting)
    assert "X-Mailwright-Delivery-Mode" not in parsed  # the daemon took the field out
    assert background.run("-q").returncode == 0
    line = background.mw.wait_log(f"{waiting}: to=<postmaster@remote.test>")
    assert "stat=Sent" in line


def test_odi_delivers_before_sendmail_exits_even_in_queue_mode(queue_only: Tools) -> None:
    a = queued(queue_only, "-odi", "postmaster@remote.test")
    assert stored(queue_only, a) is None  # delivered and gone when sendmail returned
    b = queued(queue_only, "root@other.test")  # -odb in queue-only mode: waits
    assert stored(queue_only, b) is not None
    assert "stat=Sent" in queue_only.mw.wait_log(f"{a}: to=<postmaster@remote.test>")
    assert sent(queue_only, b) == []


def test_odi_with_the_peer_down_still_exits_0(queue_only: Tools, sink: smtp_sink.SmtpSink) -> None:
    sink.stop()
    a = queued(queue_only, "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "postmaster@remote.test")
    message = stored(queue_only, a)
    assert message is not None and message.recipients[0].attempts == 1  # tried, deferred
    assert "stat=Deferred" in queue_only.mw.wait_log(f"{a}: to=<")
