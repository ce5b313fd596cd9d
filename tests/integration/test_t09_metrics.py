"""t09: the Prometheus endpoint after real traffic, counted exactly.

A real daemon delivers in the background to three smtp-sink peers (one accepts,
one answers RCPT with 450, one with 500) and to a closed port, through a
milter that is not there (failure policy: accept). One SMTP session sends two
messages and has one recipient refused. Every counter must move by exactly
what happened; the queue gauges must describe what is left.
"""

from __future__ import annotations

import smtplib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.queue.sqlite_schema import lost_mark
from tests.support import smtp_sink
from tests.support.daemon import Mailwright, free_port, wait_until
from tests.support.peers import peer
from tests.support.smtp import RawClient
from tests.support.smtp_sink import SmtpSink
from tests.support.web import Labels, Web, total, value

pytestmark = peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")

TOKEN = "metrics-token-1234"
Samples = dict[tuple[str, Labels], float]


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Callable[..., SmtpSink]]:
    started: list[SmtpSink] = []

    def start(*options: str) -> SmtpSink:
        sink = SmtpSink(tmp_path / f"sink{len(started)}", *options).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


def daemon(root: Path, table: str, extra: dict[str, Any] | None = None) -> Mailwright:
    (root / "transport").parent.mkdir(parents=True, exist_ok=True)
    (root / "transport").write_text(table)
    config: dict[str, Any] = {
        "delivery": {"mode": "background"},
        "routing": {"transport_table": str(root / "transport")},
        "queue": {"host_status_timeout": 0},
        "http": {"port": free_port(), "token": TOKEN},
        **(extra or {}),
    }
    return Mailwright(root, config).start()


def test_counters_move_by_exactly_what_happened(tmp_path: Path, sinks) -> None:
    ok, soft, hard = sinks(), sinks("-r", "RCPT"), sinks("-f", "RCPT")
    closed = free_port()
    table = (
        f"ok.test smtp:[127.0.0.1]:{ok.port}\nsoft.test smtp:[127.0.0.1]:{soft.port}\n"
        f"hard.test smtp:[127.0.0.1]:{hard.port}\ndown.test smtp:[127.0.0.1]:{closed}\n"
    )
    absent = f"inet:{free_port()}@127.0.0.1"
    mw = daemon(
        tmp_path / "mw",
        table,
        {"filters": [{"milter": absent, "name": "absent", "on_failure": "accept"}]},
    )
    try:
        web = Web(mw.config["http"]["port"])
        before = web.scrape()
        listener = f"smtp-{mw.port}"

        with smtplib.SMTP("127.0.0.1", mw.port, timeout=20) as client:
            refused = client.sendmail(
                "sender@ok.test",
                ["a@ok.test", "b@soft.test", "c@hard.test", "d@down.test", "no-such-user@mx.test"],
                b"Subject: one\r\n\r\nfirst\r\n",
            )
            assert list(refused) == ["no-such-user@mx.test"]
            client.sendmail("sender@ok.test", ["e@ok.test"], b"Subject: two\r\n\r\nsecond\r\n")

        # a, e and the bounce for c (to sender@ok.test) delivered; b and d deferred; c bounced
        def settled() -> bool:
            now = web.scrape()
            done = total(now, "mailwright_deliveries_total") - total(
                before, "mailwright_deliveries_total"
            )
            left = value(now, "mailwright_queue_messages", state="active")
            return done >= 6 and left == 1  # results are counted just before their commit

        wait_until(settled, what="six delivery results, committed")
        after = web.scrape()

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("mailwright_messages_received_total", listener=listener) == 2
        assert delta("mailwright_rejections_total", stage="rcpt", status="5.1.1") == 1
        assert (
            total(after, "mailwright_rejections_total")
            - total(before, "mailwright_rejections_total")
            == 1
        )
        assert delta("mailwright_deliveries_total", result="delivered", transport="smtp") == 3
        assert delta("mailwright_deliveries_total", result="deferred", transport="smtp") == 2
        assert delta("mailwright_deliveries_total", result="bounced", transport="smtp") == 1
        assert (
            total(after, "mailwright_deliveries_total")
            - total(before, "mailwright_deliveries_total")
            == 6
        )
        assert delta("mailwright_delivery_latency_seconds_count", transport="smtp") == 3
        assert delta("mailwright_milter_calls_total", filter="absent", stage="connect") == 1
        assert delta("mailwright_milter_failures_total", filter="absent", stage="connect") == 1

        def connections(port: int, result: str) -> float:
            return delta(
                "mailwright_outbound_connections_total",
                destination=f"smtp:[127.0.0.1]:{port}",
                result=result,
            )

        # a, e and the bounce went to ok.test: each needed a connection, new or reused
        assert connections(ok.port, "opened") + connections(ok.port, "reused") == 3
        assert connections(ok.port, "opened") >= 1
        assert connections(soft.port, "opened") == 1
        assert connections(hard.port, "opened") == 1
        assert connections(closed, "failed") == 1
        assert connections(closed, "opened") == 0

        assert value(after, "mailwright_queue_messages", state="active") == 1
        assert value(after, "mailwright_queue_messages", state="hold") == 0
        assert value(after, "mailwright_queue_recipients", state="deferred") == 2
        assert value(after, "mailwright_queue_recipients", state="due") == 0
        assert value(after, "mailwright_queue_oldest_message_age_seconds") > 0
        assert value(after, "mailwright_sessions_active", listener=listener) == 0
        assert value(after, "process_open_fds") > 0
    finally:
        mw.stop()


def test_active_sessions_are_counted_while_open(tmp_path: Path) -> None:
    mw = daemon(tmp_path / "mw", "")
    try:
        web = Web(mw.config["http"]["port"])
        listener = f"smtp-{mw.port}"
        first, second = RawClient(mw.port), RawClient(mw.port)
        assert value(web.scrape(), "mailwright_sessions_active", listener=listener) == 2
        first.cmd("QUIT")
        first.close()
        wait_until(
            lambda: value(web.scrape(), "mailwright_sessions_active", listener=listener) == 1,
            what="one session left",
        )
        second.close()
        wait_until(
            lambda: value(web.scrape(), "mailwright_sessions_active", listener=listener) == 0,
            what="no session left",
        )
    finally:
        mw.stop()


def rejections_moved(before: Samples, after: Samples, **labels: str) -> float:
    return value(after, "mailwright_rejections_total", **labels) - value(
        before, "mailwright_rejections_total", **labels
    )


def test_a_refused_connection_counts_as_a_rejection_at_connect(tmp_path: Path) -> None:
    mw = daemon(tmp_path / "mw", "", {"server": {"max_connections_per_ip": 1}})
    try:
        web = Web(mw.config["http"]["port"])
        before = web.scrape()
        held = RawClient(mw.port)
        refused = RawClient(mw.port)
        assert refused.greeting.startswith("421 4.7.0")
        refused.close()
        held.close()
        assert rejections_moved(before, web.scrape(), stage="connect", status="4.7.0") == 1
    finally:
        mw.stop()


def test_a_failed_commit_counts_as_a_rejection_at_data(tmp_path: Path) -> None:
    """A queue in trouble shows in the counts: here another program (an administrator's
    sqlite3 shell) holds the write lock past the writer's busy timeout."""
    root = tmp_path / "mw"
    mw = daemon(root, "", {"delivery": {"mode": "queue"}})
    try:
        web = Web(mw.config["http"]["port"])
        before = web.scrape()
        client = RawClient(mw.port)
        client.cmd("EHLO lock.test")
        blocker = sqlite3.connect(root / "queue" / "queue.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            reply = client.message(b"Subject: locked out\r\n\r\nnot kept\r\n")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert reply.startswith("451 4.3.0"), reply
        client.cmd("QUIT")
        assert rejections_moved(before, web.scrape(), stage="data", status="4.3.0") == 1
    finally:
        mw.stop()


def test_a_queue_that_refuses_commits_says_so_everywhere(tmp_path: Path) -> None:
    """A crash after a failed sync of the queue's log leaves its lost mark; while a reader
    (here an administrator's sqlite3 shell) keeps the checkpoint from finishing, the
    restarted daemon acknowledges nothing, and the metrics, ``mailwright status`` and the
    status page say so; once the reader is gone the next commit checkpoints and all clears."""
    root = tmp_path / "mw"
    db = root / "queue" / "queue.db"
    mw = daemon(root, "", {"delivery": {"mode": "queue"}})
    reader = None
    try:
        with smtplib.SMTP("127.0.0.1", mw.port, timeout=20) as client:
            client.sendmail("a@x.test", ["b@y.test"], b"Subject: one\r\n\r\nkept\r\n")
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM messages").fetchone() == (1,)
        mw.stop()  # the log stays: the reader's snapshot is in it
        lost_mark(db).touch()  # what the crashed process left
        down = mw.cli("status")
        assert down.returncode == 69, down.stderr
        assert "queue: REFUSING MAIL since " in down.stdout.decode(), down.stdout
        mw.start()
        web = Web(mw.config["http"]["port"])
        refused = RawClient(mw.port)
        refused.cmd("EHLO lost.test")
        reply = refused.message(b"Subject: two\r\n\r\nnot acknowledged\r\n")
        assert reply.startswith("451 4.3.0"), reply
        refused.cmd("QUIT")
        assert value(web.scrape(), "mailwright_queue_refusing_commits") == 1
        shown = mw.cli("status")
        assert shown.returncode == 0, shown.stderr
        assert "queue: REFUSING MAIL since " in shown.stdout.decode(), shown.stdout
        page = web.get("/status", token=TOKEN)
        assert page.status == 200 and 'id="refusing"' in page.text
        reader.execute("ROLLBACK")
        reader.close()
        reader = None
        with smtplib.SMTP("127.0.0.1", mw.port, timeout=20) as client:
            client.sendmail("a@x.test", ["b@y.test"], b"Subject: three\r\n\r\nkept\r\n")
        assert not lost_mark(db).exists()
        assert value(web.scrape(), "mailwright_queue_refusing_commits") == 0
        assert "REFUSING" not in mw.cli("status").stdout.decode()
        assert 'id="refusing"' not in web.get("/status", token=TOKEN).text
    finally:
        if reader is not None:
            reader.close()
        mw.stop()
