"""Property tests of the protocol core: framing, chunking independence, robustness."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.smtp import events as ev
from mailwright.smtp.data import DataLimits, DataReader, dot_stuff

from .driver import Driver

line_text = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
lines = st.lists(
    st.one_of(line_text, st.sampled_from([b".", b"..", b".x", b"", b". ", b"From x"])), max_size=30
)


def content_of(parts: list[bytes]) -> bytes:
    return b"".join(p + b"\r\n" for p in parts)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


@given(lines, st.lists(st.integers(min_value=0), max_size=20))
def test_dot_stuffing_round_trip_any_split(parts: list[bytes], cuts: list[int]) -> None:
    content = content_of(parts)
    wire = dot_stuff(content) + b"NEXT"
    reader = DataReader(DataLimits(max_line=0))
    got = bytearray()
    leftover = b""
    for chunk in split(wire, cuts):
        if reader.done:
            leftover += chunk
            continue
        data, rest = reader.feed(chunk)
        got += data
        leftover += rest
    assert reader.done
    assert bytes(got) == content
    assert leftover == b"NEXT"
    assert reader.checks.problem() is None


SCRIPT = (
    b"MAIL FROM:<a@x.test> BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\n"
    b"RCPT TO:<c@y.test> NOTIFY=NEVER\r\n"
)


def run(chunks: list[bytes]) -> tuple[bytes, list[object], bytes]:
    d = Driver()
    out = bytearray()
    for chunk in chunks:
        out += d.feed(chunk)
    kinds = [type(e).__name__ for e in d.events if not isinstance(e, ev.Content)]
    return bytes(out), kinds, b"".join(d.messages)


@given(lines, st.lists(st.integers(min_value=0), max_size=30))
@settings(max_examples=200)
def test_any_split_gives_same_events(parts: list[bytes], cuts: list[int]) -> None:
    # commands are sent one group at a time (as a client waiting for replies would)
    body = dot_stuff(content_of(parts))
    groups = [
        b"EHLO c.test\r\n",
        SCRIPT,
        b"DATA\r\n",
        body + b"MAIL FROM:<>\r\nRCPT TO:<p@y.test>\r\n",
        b"BDAT 5\r\nhelloBDAT 3 LAST\r\nabc",
        b"QUIT\r\n",
    ]
    whole = run(groups)
    assert whole[1].count("ContentEnd") == 2 and whole[1][-1] == "Closed"
    pieces: list[bytes] = []
    for g in groups:
        pieces.extend(p for p in split(g, cuts) if p)
    assert run(pieces) == whole


@given(st.lists(st.binary(max_size=300), max_size=20))
@settings(max_examples=300)
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    d = Driver()
    for chunk in chunks:
        d.feed(chunk)


@given(st.lists(st.binary(max_size=200), max_size=10))
@settings(max_examples=200)
def test_arbitrary_bytes_in_transaction_never_raise(chunks: list[bytes]) -> None:
    d = Driver()
    d.feed(b"EHLO c.test\r\n")
    d.feed(SCRIPT)
    d.feed(b"DATA\r\n")
    for chunk in chunks:
        d.feed(chunk)
    d.feed(b"\r\n.\r\nBDAT 4 LAST\r\n")
    for chunk in chunks:
        d.feed(chunk)
