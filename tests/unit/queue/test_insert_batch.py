"""Batches of new messages: the multi-row insert path stores exactly what op by op would."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from mailwright.core.address import Address
from mailwright.core.envelope import Notify, Recipient
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage, NewMessage

MakeMessage = Callable[..., NewMessage]


def stored(store: SqliteQueueStore, message: NewMessage) -> tuple[object, ...]:
    got = store.get_message(message.queue_id)
    assert got is not None
    body = b"".join(store.read_body(message.queue_id))
    headers = store.read_headers(message.queue_id).encode()
    return (got.envelope, got.size, got.subject, got.origin, body, headers)


def test_a_batch_stores_what_single_inserts_store(
    tmp_path: Path, make_message: MakeMessage
) -> None:
    def batch() -> list[NewMessage]:
        many = [f"r{i}@example.org" for i in range(5)]
        dsn = Recipient(Address("d", "example.net"), frozenset({Notify.FAILURE}), "rfc822;d@x")
        return [
            make_message(queue_id="Q1", body=b"small\r\n"),
            make_message(queue_id="Q2", body=b"x" * 300_000, recipients=many),  # streamed
            make_message(queue_id="Q3", body=b"", recipients=[dsn]),
            make_message(queue_id="Q4", body=b"y\r\n" * 50_000, hold_reason="quarantine"),
        ]

    together = SqliteQueueStore(tmp_path / "together.db", body_chunk_size=64 << 10)
    one_by_one = SqliteQueueStore(tmp_path / "single.db", body_chunk_size=64 << 10)
    together.open()
    one_by_one.open()
    try:
        messages = batch()
        assert together.apply_batch([InsertMessage(m) for m in messages]) == [None] * 4
        for m in batch():
            assert one_by_one.apply_batch([InsertMessage(m)]) == [None]
        for m in messages:
            assert stored(together, m) == stored(one_by_one, m)
    finally:
        together.close()
        one_by_one.close()
    for name in ("together.db", "single.db"):
        with sqlite3.connect(tmp_path / name) as raw:
            counts = [
                raw.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("messages", "recipients", "headers")
            ]
            assert counts == [4, 8, 4]


def test_a_failing_op_in_a_batch_fails_alone(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    good = [make_message() for _ in range(3)]
    bad = make_message(recipients=[])
    results = store.apply_batch([InsertMessage(m) for m in (good[0], bad, *good[1:])])
    assert results[0] is None and results[2] is None and results[3] is None
    assert isinstance(results[1], ValueError)
    assert store.count_messages() == 3


def test_many_messages_in_one_batch(store: SqliteQueueStore, make_message: MakeMessage) -> None:
    # more rows than one statement may bind: the insert is split
    messages = [make_message(body=b"m%d\r\n" % i) for i in range(1500)]
    assert store.apply_batch([InsertMessage(m) for m in messages]) == [None] * 1500
    assert store.count_messages() == 1500
    assert b"".join(store.read_body(messages[1234].queue_id)) == b"m1234\r\n"
