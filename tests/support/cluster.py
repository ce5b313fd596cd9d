"""Nodes of a shared PostgreSQL queue and the SMTP clients that load them (issue 15's tests).

``on_postgres`` is a daemon configuration on a database; ``Node`` is a daemon of a cluster:
its own name (``[cluster] node``), loopback address (127.0.0.2, 127.0.0.3, ...: Linux
routes all of 127/8 to ``lo``), port, queue directory and host name (the EHLO it gives the
next hop, so the sink tells which node delivered), background delivery to a next hop
through a transport table. ``send`` and ``data_reply`` are one message in one session;
``Clients`` are threads sending numbered messages until stopped, recording every reply;
``number`` reads the number back from what the next hop received; ``listed``,
``listed_ids`` and ``cluster_status`` are what a node's command line shows.

What it trusts: the daemons under test (their replies are what is checked). Reads no
settings.
"""

from __future__ import annotations

import json
import re
import smtplib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.daemon import Mailwright, deep_merge, wait_until

WORKERS = {"server": {"workers": 2}}


def on_postgres(url: str, **queue: Any) -> dict[str, Any]:
    """A daemon of two workers on the database ``url``."""
    return {**WORKERS, "queue": {"backend": "postgresql", "postgresql": url, **queue}}


def body(number: int) -> bytes:
    return f"From: a@example.org\r\nSubject: number {number}\r\n\r\nhello {number}\r\n".encode()


def send(port: int, number: int, host: str = "127.0.0.1", to: str = "someone@example.com") -> str:
    """One message in its own session; the queue id of its 250."""
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@example.org")
        client.rcpt(to)
        code, text = client.data(body(number))
        assert code == 250, text
        found = re.search(rb"([0-9A-Z]{15}) Message accepted", text)
        assert found, text
        return found[1].decode()


def data_reply(port: int, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """The reply to the end of one message's data."""
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@example.org")
        client.rcpt("someone@example.com")
        return client.data(b"From: a@example.org\r\nSubject: try\r\n\r\nhello\r\n")


def number(content: bytes) -> int:
    """The number ``body`` wrote into a message."""
    found = re.search(rb"Subject: number (\d+)", content)
    assert found, content[:200]
    return int(found[1])


def listed(mw: Mailwright) -> list[dict[str, Any]]:
    """``mailwright queue list --json`` with ``mw``'s configuration."""
    out = mw.cli("queue", "list", "--json")
    assert out.returncode == 0, out.stderr.decode()
    messages: list[dict[str, Any]] = json.loads(out.stdout)
    return messages


def listed_ids(mw: Mailwright) -> set[str]:
    return {m["queue_id"] for m in listed(mw)}


def cluster_status(mw: Mailwright) -> dict[str, Any]:
    """``mailwright cluster status --json`` with ``mw``'s configuration."""
    shown = mw.cli("cluster", "status", "--json")
    assert shown.returncode == 0, shown.stderr.decode()
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


class Node(Mailwright):
    """One daemon of a cluster on ``address``, delivering in the background through
    ``transport`` (a transport table's contents), ``extra`` merged into its configuration."""

    def __init__(
        self,
        root: Path,
        name: str,
        address: str,
        database: str,
        transport: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        table = root / "transport"
        table.write_text(transport)
        config: dict[str, Any] = {
            "hostname": f"{name}.test",
            "queue": {"backend": "postgresql", "postgresql": database},
            "cluster": {"node": name},
            "routing": {"transport_table": str(table)},
            "delivery": {"mode": "background", "idle_connection_timeout": 0.5},
        }
        super().__init__(root / "mw", deep_merge(config, extra or {}))
        self.name = name
        self.address = address
        self.config["listeners"] = [{"address": address, "port": self.port, "kind": "smtp"}]


@dataclass(frozen=True)
class Answer:
    """One client's try: the message's number, the reply to its data (code 0: the session
    broke before one came) and when the data was about to be sent and when it was answered
    (``time.monotonic``)."""

    number: int
    code: int
    text: bytes
    sent: float
    answered: float


class Clients:
    """``senders`` threads sending one message per session to ``host:port`` until stopped;
    every reply is recorded, ``acked`` are the numbers of the messages that got a 250."""

    def __init__(self, host: str, port: int, numbers: Iterator[int], senders: int = 2) -> None:
        self.host = host
        self.port = port
        self.answers: list[Answer] = []
        self._numbers = numbers  # shared by all clients of a test: each number once
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(senders)]

    @property
    def acked(self) -> list[int]:
        with self._lock:
            return [r.number for r in self.answers if r.code == 250]

    def since(self, start: float) -> list[Answer]:
        """The replies to data sent after ``start``."""
        with self._lock:
            return [r for r in self.answers if r.sent > start]

    def start(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_acked(self, count: int, start: float = 0.0, timeout: float = 60) -> None:
        """Until ``count`` messages sent after ``start`` got a 250."""
        wait_until(
            lambda: sum(r.code == 250 for r in self.since(start)) >= count,
            timeout,
            f"{count} acknowledged messages from {self.host}:{self.port}",
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            n = next(self._numbers)
            sent = answered = 0.0
            try:
                with smtplib.SMTP(self.host, self.port, timeout=30) as client:
                    client.ehlo("client.test")
                    client.mail("a@example.org")
                    client.rcpt("someone@example.com")
                    sent = time.monotonic()
                    code, text = client.data(body(n))
                    answered = time.monotonic()
            except smtplib.SMTPResponseException as exc:  # refused at DATA (or MAIL)
                code, text = exc.smtp_code, exc.smtp_error
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
            except (OSError, smtplib.SMTPException) as exc:
                code, text = 0, str(exc).encode()
            if not sent:
                sent = answered = time.monotonic()  # the data never went
            with self._lock:
                self.answers.append(Answer(n, code, text, sent, answered or time.monotonic()))
            if code != 250:
                self._stop.wait(0.05)  # the node or its database is down: do not spin
