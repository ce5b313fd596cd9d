"""The report body streams the original: bounded memory, re-readable, and queued for real."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.core.address import Address
from mailwright.core.envelope import Envelope, MailParams, Notify, Ret
from mailwright.dsn import (
    Action,
    OriginalMessage,
    RecipientReport,
    ReportBody,
    ReportKind,
    build_report,
)
from mailwright.queue.spool import Spool
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import (
    InsertMessage,
    NewMessage,
    RecipientResult,
    RecipientState,
    RecordResults,
)
from tests.unit.dsn.builders import HOST, NOW, SENDER, make_original, original_headers, rcpt
from tests.unit.dsn.reading import parse, raw_parts, report_bytes, status_blocks

MiB = 1 << 20


def pattern_body(size: int, block: int = 64 * 1024) -> Iterator[bytes]:
    """``size`` octets of text lines, generated block by block (never held whole)."""
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"
    unit = line * (block // len(line) + 1)
    sent = 0
    while sent < size:
        piece = unit[: min(block, size - sent)]
        sent += len(piece)
        yield piece


def test_100_mib_original_with_ret_full_in_bounded_memory() -> None:
    size = 100 * MiB
    bob = rcpt("bob@example.org")
    headers = original_headers()
    original = OriginalMessage(
        queue_id="01HF3K7Q2M4XK9A",
        envelope=Envelope(SENDER, MailParams(ret=Ret.FULL), [bob]),
        received_at=NOW - 60,
        headers=headers,
        body=lambda: pattern_body(size),
        body_size=size,
    )
    expected = hashlib.sha256(headers.encode() + b"\r\n")
    for piece in pattern_body(size):
        expected.update(piece)
    line = RecipientReport.from_recipient(bob, Action.FAILED, "5.1.1")

    tracemalloc.start()
    try:
        report = build_report(original, ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW)
        assert report is not None
        marker = b"Content-Type: message/rfc822\r\n\r\n"
        prefix = bytearray()
        returned = hashlib.sha256()
        keep = b""  # the last few octets, which may be the closing delimiter
        total = 0
        for chunk in report.body.chunks(MiB):
            assert len(chunk) <= MiB
            total += len(chunk)
            if marker in prefix:
                data = keep + chunk
            else:  # still in the report's own parts: look for where the original starts
                prefix += chunk
                if marker not in prefix:
                    continue
                data = bytes(prefix[prefix.index(marker) + len(marker) :])
            returned.update(data[:-256])
            keep = data[-256:]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    boundary = parse_boundary(report)
    closing = f"\r\n--{boundary}--\r\n".encode()
    assert keep.endswith(closing)
    returned.update(keep[: -len(closing)])
    assert returned.hexdigest() == expected.hexdigest()
    assert total == report.body.size > size
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB while streaming a 100 MiB original"
    print(f"100 MiB original streamed into a report; tracemalloc peak {peak / MiB:.2f} MiB")


def parse_boundary(report: NewMessage) -> str:
    content_type = report.headers.get("Content-Type")
    assert content_type is not None
    return content_type.text.split('boundary="')[1].rstrip('"')


def test_report_body_is_re_readable_and_bounded_by_chunk_size() -> None:
    bob = rcpt("bob@example.org")
    body = b"".join(pattern_body(300_000))
    original = make_original([bob], body=body)
    line = RecipientReport.from_recipient(bob, Action.FAILED, "5.1.1")
    report = build_report(original, ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW)
    assert report is not None
    first = list(report.body.chunks(4096))
    second = list(report.body.chunks(100_000))
    assert all(len(c) == 4096 for c in first[:-1]) and 0 < len(first[-1]) <= 4096
    assert all(len(c) == 100_000 for c in second[:-1])
    assert b"".join(first) == b"".join(second)
    assert len(b"".join(first)) == report.body.size
    assert raw_parts(report)[2].content == original.headers.encode() + b"\r\n" + body


def test_unknown_body_size_is_counted_once_and_matches() -> None:
    reads = 0
    body = b"line\r\n" * 1000

    def read() -> Iterator[bytes]:
        nonlocal reads
        reads += 1
        yield body

    source = ReportBody(b"head", read, b"tail")
    assert source.size == 8 + len(body)
    assert reads == 1
    assert source.size == 8 + len(body)
    assert reads == 1
    assert b"".join(source.chunks()) == b"head" + body + b"tail"


def test_original_that_changed_size_fails_loudly() -> None:
    source = ReportBody(b"head", lambda: iter([b"short"]), b"tail", middle_size=100)
    with pytest.raises(ValueError, match="read 5 octets, expected 100"):
        b"".join(source.chunks())
    with pytest.raises(ValueError, match="chunk_size"):
        source.chunks(0)


def test_report_body_from_a_spool() -> None:
    bob = rcpt("bob@example.org")
    with Spool(memory_limit=1024) as spool:
        for piece in pattern_body(50_000, block=1000):
            spool.write(piece)
        assert not spool.in_memory
        original = make_original([bob])
        original.body, original.body_size = spool.chunks, None
        line = RecipientReport.from_recipient(bob, Action.FAILED, "5.1.1")
        report = build_report(original, ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW)
        assert report is not None
        assert raw_parts(report)[2].content == b"".join(original.message_chunks())


def test_bounce_queued_with_the_results_through_a_real_store(tmp_path: Path) -> None:
    """Original in SQLite -> failed -> the bounce is inserted by RecordResults, read back."""
    store = SqliteQueueStore(tmp_path / "queue.db", body_chunk_size=64 * 1024)
    store.open()
    try:
        body = b"".join(pattern_body(1_000_000))
        bob = rcpt("bob@example.org", orcpt="rfc822;Bob@example.org")
        carol = rcpt("carol@example.net", notify="NEVER")
        with Spool() as spool:
            spool.write(body)
            incoming = NewMessage(
                queue_id="01HF3K7Q2M4XK9A",
                envelope=Envelope(SENDER, MailParams(envid="E1"), [bob, carol]),
                headers=original_headers(),
                body=spool,
                received_at=NOW - 3600,
            )
            assert store.apply_batch([InsertMessage(incoming)]) == [None]
        original = OriginalMessage.from_store(store, incoming.queue_id)
        stored = store.get_message(incoming.queue_id)
        assert stored is not None
        lines = [RecipientReport.from_stored(r, Action.FAILED, "5.1.1") for r in stored.recipients]
        report = build_report(original, ReportKind.FAILURE, lines, reporting_mta=HOST, now=NOW)
        assert report is not None
        expected = report_bytes(report)  # read while the original is still queued
        results = [
            RecipientResult(incoming.queue_id, r.index, RecipientState.FAILED, attempted_at=NOW)
            for r in stored.recipients
        ]
        (outcome,) = store.apply_batch([RecordResults(results, [report])])
        assert outcome.removed == [incoming.queue_id]  # type: ignore[attr-defined]

        queued = store.get_message(report.queue_id)
        assert queued is not None
        assert queued.envelope.sender is None
        assert queued.origin.protocol == "bounce"
        assert [r.address for r in queued.envelope.recipients] == [Address("alice", "example.com")]
        assert queued.envelope.recipients[0].notify == frozenset({Notify.NEVER})
        back = NewMessage(
            queue_id=queued.queue_id,
            envelope=queued.envelope,
            headers=store.read_headers(queued.queue_id),
            body=Spool.from_bytes(b"".join(store.read_body(queued.queue_id))),
            received_at=queued.received_at,
        )
        assert report_bytes(back) == expected
        assert queued.size == len(expected)
        blocks = status_blocks(back)
        assert [b["Final-Recipient"] for b in blocks[1:]] == ["rfc822; bob@example.org"]
        assert blocks[1]["Original-Recipient"] == "rfc822;Bob@example.org"
        assert blocks[0]["Original-Envelope-Id"] == "E1"
        assert raw_parts(back)[2].content == original_headers().encode() + b"\r\n" + body
        assert parse(back)["Subject"] == "Undelivered Mail Returned to Sender"
    finally:
        store.close()
