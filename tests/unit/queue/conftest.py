"""Fixtures for the queue tests: a real SQLite store in tmp_path, a running writer, messages."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from mailwright.core.address import Address
from mailwright.core.envelope import Envelope, MailParams, Recipient
from mailwright.core.headers import Header, HeaderList
from mailwright.core.queueid import new_queue_id
from mailwright.queue import sqlite_schema
from mailwright.queue.spool import Spool
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import NewMessage, Origin
from mailwright.queue.writer import QueueWriter

MakeMessage = Callable[..., NewMessage]
SENDER = Address("sender", "example.com")


def old_queue(path: Path, version: int) -> None:
    """A queue file as a program of schema ``version`` left it, with one message (OLDQID,
    from a@x.test to b@y.test) queued, written the way that version wrote it."""
    conn = sqlite3.connect(path)
    for number in range(1, version + 1):
        for statement in sqlite_schema.MIGRATIONS[number]:
            conn.execute(statement)
    conn.execute(
        "INSERT INTO messages (id, queue_id, sender_local, sender_domain, body_type, smtputf8,"
        " received_at, size, body_size, state, protocol, client_address, client_name, helo,"
        " auth_user, local_user) VALUES (1, 'OLDQID', 'a', 'x.test', '7BIT', 0, 1.0, 10, 0,"
        " 'active', 'ESMTP', '', '', '', '', '')"
    )
    conn.execute("INSERT INTO headers VALUES (1, X'')")
    conn.execute(
        "INSERT INTO recipients (message_id, idx, local, domain, state, next_attempt)"
        " VALUES (1, 0, 'b', 'y.test', 'queued', 1.0)"
    )
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


def build_message(
    queue_id: str | None = None,
    recipients: Sequence[str | Recipient] = ("rcpt@example.org",),
    body: bytes = b"Hello.\r\n",
    sender: Address | None = SENDER,
    received_at: float = 1_700_000_000.0,
    params: MailParams | None = None,
    subject: str = "Test message",
    hold_reason: str | None = None,
    origin: Origin | None = None,
) -> NewMessage:
    queue_id = queue_id or new_queue_id()
    rcpts = [
        r if isinstance(r, Recipient) else Recipient(Address(*r.rsplit("@", 1))) for r in recipients
    ]
    headers = HeaderList(
        [
            Header.make("From", str(sender) if sender else "MAILER-DAEMON"),
            Header.make("To", ", ".join(str(r.address) for r in rcpts)),
            Header.make("Subject", subject),
            Header.make("Message-ID", f"<{queue_id}@test.example>"),
        ]
    )
    return NewMessage(
        queue_id=queue_id,
        envelope=Envelope(sender, params or MailParams(), rcpts),
        headers=headers,
        body=Spool.from_bytes(body),
        received_at=received_at,
        origin=origin or Origin(),
        hold_reason=hold_reason,
    )


@pytest.fixture
def make_message() -> MakeMessage:
    return build_message


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def store(store_path: Path) -> Iterator[SqliteQueueStore]:
    s = SqliteQueueStore(store_path)
    s.open()
    yield s
    s.close()


@pytest.fixture
def writer(store: SqliteQueueStore) -> Iterator[QueueWriter]:
    w = QueueWriter(store)
    w.start()
    yield w
    w.stop()
