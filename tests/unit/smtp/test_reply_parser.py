"""ReplyParser: the one-line fast path gives what the line-by-line path gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.core.reply import Reply
from mailwright.smtp import reply as replies
from mailwright.smtp.reply import ReplyError, ReplyParser

Parsed = list[tuple[int, str | None, tuple[str, ...], bool] | tuple[str, str]]


def parse(chunks: list[bytes]) -> Parsed:
    parser = ReplyParser()
    out: Parsed = []
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            try:
                reply = parser.next_reply()
            except ReplyError as exc:
                out.append(("error", str(exc)))
                return out
            if reply is None:
                break
            out.append((reply.code, reply.status, reply.lines, reply.from_peer))
    return out


def parse_line_by_line(chunks: list[bytes], monkeypatch: pytest.MonkeyPatch) -> Parsed:
    with monkeypatch.context() as patched:
        patched.setattr(replies, "_one_line", lambda raw: None)
        return parse(chunks)


PIECES = [
    b"250", b"251", b"199", b"550", b"5x0", b"25", b"2500", b"260", b"999", b" ", b"-",
    b"2.1.0", b"5.1.1", b"4.0.0", b"3.0.0", b"Ok", b" queued as X", b"\xff\xfe", b"\r\n",
    b"\n", b"\r", b"\t",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=16), st.integers(1, 9))
def test_the_one_line_path_agrees_with_the_line_by_line_path(
    pieces: list[bytes], step: int
) -> None:
    data = b"".join(pieces)
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert parse(chunks) == parse_line_by_line(chunks, monkeypatch)


def test_a_repeated_line_is_parsed_once() -> None:
    replies._one_line.cache_clear()
    first = ReplyParser()
    first.feed(b"250 2.1.0 Sender ok\r\n")
    second = ReplyParser()
    second.feed(b"250 2.1.0 Sender ok\r\n")
    assert first.next_reply() == second.next_reply() == Reply.of(250, "2.1.0", "Sender ok")
    assert replies._one_line.cache_info().hits == 1


def test_a_multi_line_reply_is_joined_not_taken_line_by_line() -> None:
    parser = ReplyParser()
    parser.feed(b"250-mx.test\r\n250 PIPELINING\r\n")
    reply = parser.next_reply()
    assert reply is not None and reply.lines == ("mx.test", "PIPELINING")
