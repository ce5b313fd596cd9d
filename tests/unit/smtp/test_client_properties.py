"""Property tests of the client side: content encoding, reply framing, robustness."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.core.reply import Reply
from mailwright.smtp.client import ClientSettings, TransactionDone
from mailwright.smtp.data import DataLimits, dot_stuff
from mailwright.smtp.encoder import (
    CrlfLines,
    DotStuffer,
    LineEndings,
    crlf_only,
    normalize_line_endings,
)
from mailwright.smtp.reply import ReplyError, ReplyParser
from mailwright.smtp.server import ServerSettings

from .client_harness import EHLO_FULL, Pair, Scripted, txn
from .test_properties import split

# content rich in the interesting octets: CR, LF, dots at line starts
content = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"b c", b"\x80\xff", b" "]),
    max_size=60,
).map(b"".join)
cuts = st.lists(st.integers(min_value=0), max_size=12)


def has_bare_line_end(data: bytes) -> bool:
    return data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n")


@given(content, cuts)
def test_streaming_dot_stuffing_equals_dot_stuff_of_the_normalised_whole(
    data: bytes, points: list[int]
) -> None:
    stuffer = DotStuffer()
    out = b"".join(stuffer.feed(chunk) for chunk in split(data, points)) + stuffer.finish()
    assert out == dot_stuff(normalize_line_endings(data))
    assert not has_bare_line_end(out)


@given(content, cuts)
def test_streaming_line_endings_equal_whole_buffer_normalisation(
    data: bytes, points: list[int]
) -> None:
    lines = LineEndings()
    out = b"".join(lines.feed(chunk) for chunk in split(data, points)) + lines.finish()
    assert out == normalize_line_endings(data)


def fold_reference(data: bytes, limit: int) -> bytes:
    """Each normalised line cut into pieces of ``limit`` octets, the later ones behind SP."""
    out = []
    for line in normalize_line_endings(data).split(b"\r\n"):
        pieces = [line[:limit]]
        rest = line[limit:]
        while rest:
            pieces.append(b" " + rest[: limit - 1])
            rest = rest[limit - 1 :]
        out.append(b"\r\n".join(pieces))
    return b"\r\n".join(out)


long_lines = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"bcdefg", b"hijklmnopq", b" "]), max_size=60
).map(b"".join)


@given(long_lines, cuts, st.integers(min_value=2, max_value=12))
def test_streaming_folding_equals_folding_the_whole_and_no_line_is_too_long(
    data: bytes, points: list[int], limit: int
) -> None:
    lines = LineEndings(limit)
    out = b"".join(lines.feed(chunk) for chunk in split(data, points)) + lines.finish()
    assert out == fold_reference(data, limit)
    assert all(len(line) <= limit for line in out.split(b"\r\n"))


def test_default_limit_is_998_octets_of_text() -> None:
    stuffer = DotStuffer()
    out = stuffer.feed(b"." + b"a" * 997 + b"\r\n" + b"b" * 999) + stuffer.finish()
    assert out == b".." + b"a" * 997 + b"\r\n" + b"b" * 998 + b"\r\n b\r\n.\r\n"


@given(content)
def test_crlf_only_is_true_exactly_when_normalising_changes_nothing(data: bytes) -> None:
    assert crlf_only(data) == (normalize_line_endings(data) == data)


reply_line = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", max_codepoint=0x2FF), max_size=40
).filter(lambda t: not t.strip()[:1].isdigit())  # text that looks like a status is a status
replies = st.lists(
    st.tuples(
        st.integers(min_value=200, max_value=559).filter(lambda c: c % 100 < 60),
        st.sampled_from([None, "2.0.0", "4.7.1", "5.1.1"]),
        st.lists(reply_line, min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=6,
)


@given(replies, cuts)
def test_reply_parser_is_independent_of_read_boundaries(
    spec: list[tuple[int, str | None, list[str]]], points: list[int]
) -> None:
    expected = []
    wire = b""
    for code, given_status, lines in spec:
        status = given_status if given_status and int(given_status[0]) == code // 100 else None
        reply = Reply.of(code, status, *[line.strip() for line in lines])
        expected.append(reply)
        wire += reply.encode()
    parser = ReplyParser()
    got = []
    for chunk in split(wire, points):
        parser.feed(chunk)
        while (r := parser.next_reply()) is not None:
            got.append(r)
    assert [(r.code, r.status) for r in got] == [(r.code, r.status) for r in expected]
    assert [r.lines for r in got] == [tuple(x.strip() for x in r.lines) for r in expected]


@given(st.binary(max_size=300), cuts)
def test_reply_parser_never_fails_with_anything_but_reply_error(
    data: bytes, points: list[int]
) -> None:
    parser = ReplyParser()
    try:
        for chunk in split(data, points):
            parser.feed(chunk)
            while parser.next_reply() is not None:
                pass
    except ReplyError:
        pass


server_bytes = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from(
            [b"250 ok\r\n", b"354 go\r\n", b"421 bye\r\n", b"550 5.1.1 no\r\n", b"250-x\r\n"]
        ),
    ),
    max_size=12,
).map(b"".join)


@given(server_bytes, cuts, st.booleans())
@settings(max_examples=300)
def test_client_never_raises_on_anything_the_server_sends(
    data: bytes, points: list[int], eof: bool
) -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.client.begin(txn("b@y.test", "c@y.test"))
    events = []
    for chunk in split(data, points):
        events += s.feed(chunk)
        if s.client.content_refused or s.client.state.name == "CONTENT":
            s.client.send_content(b"x\r\n")
            s.client.end_content()
    if eof:
        s.client.receive_eof()
        events += s.feed(b"")
    done = [e for e in events if isinstance(e, TransactionDone)]
    assert len(done) <= 1
    if done:
        assert len(done[0].result.replies) == 2


@given(content, cuts, st.booleans(), st.integers(min_value=1, max_value=20))
@settings(max_examples=150)
def test_message_arrives_at_the_server_core_normalised(
    data: bytes, points: list[int], chunking: bool, chunk_size: int
) -> None:
    server = ServerSettings(
        hostname="mx.test", chunking=chunking, data_limits=DataLimits(max_line=0)
    )
    p = Pair(server, client=ClientSettings("client.test", bdat_chunk_size=chunk_size))
    result = p.send(txn("b@y.test"), *split(data, points))
    assert [r.reply.code for r in result.replies] == [250]
    expected = normalize_line_endings(data)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert p.server.messages == [expected]
    body = p.wire.split(b"RCPT TO:<b@y.test>\r\n", 1)[1]
    if not chunking:
        assert not has_bare_line_end(body)


crlf_content = st.lists(
    st.sampled_from([b"a", b"bcdefg", b"hijklmnopq", b" ", b".", b""]), max_size=12
).map(b"\r\n".join)


@given(
    st.lists(crlf_content, max_size=8).map(b"\r\n".join),
    cuts,
    st.sampled_from([0, 2, 5, 12, 998]),
)
def test_chunks_known_to_be_crlf_only_encode_as_any_other_chunk(
    data: bytes, points: list[int], limit: int
) -> None:
    # the fast path of a ``CrlfLines`` chunk (no check of its line ends, a jump from
    # line end to line end for the folding) gives what the general path gives
    plain, known = DotStuffer(limit), DotStuffer(limit)
    chunks = split(data, points)
    out = b"".join(plain.feed(chunk) for chunk in chunks) + plain.finish()
    marked = b"".join(known.feed(CrlfLines(chunk)) for chunk in chunks) + known.finish()
    assert marked == out


def test_a_chunk_known_to_be_crlf_only_is_not_checked_again() -> None:
    # the mark is trusted: what carries it must have been checked where it came from
    assert LineEndings().feed(CrlfLines(b"a\nb\r\n")) == b"a\nb\r\n"
    assert LineEndings().feed(b"a\nb\r\n") == b"a\r\nb\r\n"
    assert LineEndings(3).feed(CrlfLines(b"abcdef\r\n")) == b"abc\r\n de\r\n f\r\n"
