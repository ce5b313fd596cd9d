"""Issue 15: two nodes on one PostgreSQL queue; one goes away, the other delivers its mail.

A real PostgreSQL (tests/support/postgres.py), two real daemons (nodes A and B: their own
ports and queue directories, one database, background delivery, a transport table to a
Postfix smtp-sink that is down at first) and real clients. Mail accepted by node A is
deferred (the next hop is down); node B's ``mailwright queue list`` sees it and ``queue
hold``/``release`` act on it; node A stops, the next hop comes up, ``mailwright queue
flush`` on node B delivers every message: none lost, duplicates counted and reported.

Then crashes: node A's supervisor and workers are killed at once (SIGKILL to its process
group) while clients are sending to it, and restarted, three times, with node B running
and the next hop up: every message a client got a 250 for reaches the next hop (counted
there once all is delivered), and the duplicates (at-least-once) are reported.
"""

from __future__ import annotations

import itertools
import json
import re
import smtplib
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.test_i15_postgres import send
from tests.support import smtp_sink
from tests.support.daemon import Mailwright, wait_until
from tests.support.peers import peer
from tests.support.sendmail import short_tmp

MESSAGES = 10


def node(root: Path, database: str, sink_port: int) -> Mailwright:
    table = root / "transport"
    root.mkdir(parents=True, exist_ok=True)
    table.write_text(f"* smtp:[127.0.0.1]:{sink_port}\n")
    config: dict[str, Any] = {
        "server": {"workers": 2},
        "queue": {"backend": "postgresql", "postgresql": database},
        "routing": {"transport_table": str(table)},
        "delivery": {"mode": "background", "idle_connection_timeout": 0.5},
    }
    return Mailwright(root / "mw", config)


def listed(mw: Mailwright) -> list[dict[str, Any]]:
    out = mw.cli("queue", "list", "--json")
    assert out.returncode == 0, out.stderr.decode()
    messages: list[dict[str, Any]] = json.loads(out.stdout)
    return messages


def all_deferred(mw: Mailwright, ids: set[str]) -> bool:
    messages = {m["queue_id"]: m for m in listed(mw)}
    return set(messages) == ids and all(
        r["attempts"] >= 1 and r["state"] == "queued"
        for m in messages.values()
        for r in m["recipients"]
    )


def number(content: bytes) -> int:
    found = re.search(rb"Subject: number (\d+)", content)
    assert found, content[:200]
    return int(found[1])


@peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
def test_mail_of_a_stopped_node_is_delivered_by_the_other(postgres_database: str) -> None:
    with short_tmp() as root:
        sink = smtp_sink.SmtpSink(root / "sink")  # its port is chosen; it is not started
        a = node(root / "a", postgres_database, sink.port)
        b = node(root / "b", postgres_database, sink.port)
        a.start()
        try:
            b.start()
            try:
                ids = {send(a.port, n) for n in range(MESSAGES)}
                # both nodes try (the shared queue) and defer: the next hop is down
                wait_until(lambda: all_deferred(b, ids), 60, "every message deferred")
                assert {m["queue_id"] for m in listed(b)} == ids  # B lists A's mail
                held = sorted(ids)[0]
                done = b.cli("queue", "hold", held, "--reason", "check")
                assert done.returncode == 0, done.stderr.decode()
                assert b"held: 1 message(s)" in done.stdout
                states = {m["queue_id"]: m["state"] for m in listed(a)}  # seen from A too
                assert states[held] == "hold" and list(states.values()).count("hold") == 1
                done = b.cli("queue", "release", held)
                assert done.returncode == 0, done.stderr.decode()
                assert a.stop() == 0
                sink.start()
                flushed = b.cli("queue", "flush")
                assert flushed.returncode == 0, flushed.stderr.decode()
                wait_until(lambda: not listed(b), 60, "node B to empty the queue")
                wait_until(lambda: len(sink.messages()) >= MESSAGES, 30, "the sink to have all")
            finally:
                assert b.stop() == 0
            delivered = Counter(number(m.content) for m in sink.messages())
            duplicates = sum(count - 1 for count in delivered.values())
            print(
                f"failover: {MESSAGES} sent, {len(delivered)} delivered, {duplicates} duplicate(s)"
            )
            assert set(delivered) == set(range(MESSAGES)), "lost"
            assert any("stat=Sent" in line for line in b.log)
        finally:
            a.stop()
            sink.stop()


CYCLES = 3
SENDERS = 4


class Clients:
    """Threads sending one message per session to a port until stopped; the numbers of
    the messages that got a 250 (acknowledged), whatever happened to the others."""

    def __init__(self, port: int, numbers: Iterator[int]) -> None:
        self.port = port
        self.acked: list[int] = []
        self.failed = 0
        self._numbers = numbers  # shared by every round of clients: each number once
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(SENDERS)]

    def start(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_acked(self, count: int) -> None:
        wait_until(lambda: len(self.acked) >= count, 60, f"{count} acknowledged messages")

    def _run(self) -> None:
        while not self._stop.is_set():
            n = next(self._numbers)
            body = f"From: a@example.org\r\nSubject: number {n}\r\n\r\nhello {n}\r\n"
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                    client.ehlo("client.test")
                    client.mail("a@example.org")
                    client.rcpt("someone@example.com")
                    code, _ = client.data(body.encode())
            except (OSError, smtplib.SMTPException):
                code = 0
            with self._lock:
                if code == 250:
                    self.acked.append(n)
                else:
                    self.failed += 1
            if code != 250:
                self._stop.wait(0.05)  # the node is down: do not spin while it restarts


@peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
def test_a_node_killed_while_clients_send_loses_no_acknowledged_message(
    postgres_database: str,
) -> None:
    with short_tmp() as root:
        sink = smtp_sink.SmtpSink(root / "sink").start()
        a = node(root / "a", postgres_database, sink.port)
        a.own_group = True
        b = node(root / "b", postgres_database, sink.port)
        acked: list[int] = []
        numbers = itertools.count()
        try:
            b.start()
            a.start()
            for cycle in range(CYCLES):
                clients = Clients(a.port, numbers).start()
                try:
                    clients.wait_acked(15)
                    a.kill_group()  # while the clients send
                finally:
                    clients.stop()
                acked += clients.acked
                print(f"cycle {cycle}: {len(clients.acked)} acked, {clients.failed} failed")
                a.start()
            wait_until(lambda: not listed(b), 120, "the nodes to empty the queue")
            wait_until(
                lambda: set(acked) <= {number(m.content) for m in sink.messages()},
                30,
                "the sink to have every acknowledged message",
            )
        finally:
            a.stop()
            b.stop()
            delivered = Counter(number(m.content) for m in sink.messages())
            sink.stop()
        duplicates = sum(count - 1 for count in delivered.values())
        lost = set(acked) - set(delivered)
        print(
            f"kill -9 x{CYCLES}: {len(acked)} acknowledged, {len(delivered)} delivered,"
            f" {duplicates} duplicate(s), {len(lost)} lost"
        )
        assert not lost
