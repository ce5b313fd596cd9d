from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailwright.core.headers import HeaderParser


def parse(data: bytes, max_size: int = 1 << 20) -> tuple[HeaderParser, bytes]:
    p = HeaderParser(max_size)
    body = p.feed(data) + p.close()
    return p, body


def test_headers_and_body_split_with_folding() -> None:
    p, body = parse(b"Subject: a\r\n b\r\nTo: x@y\r\n\r\nbody\r\n")
    assert [h.name for h in p.headers] == ["Subject", "To"]
    assert p.headers[0].value == b" a\r\n b"
    assert p.headers[0].text == "a b"
    assert body == b"body\r\n"
    assert p.separator_seen


def test_no_blank_line_body_starts_at_first_non_header() -> None:
    p, body = parse(b"Subject: a\r\nthis is not a header\r\nmore\r\n")
    assert [h.name for h in p.headers] == ["Subject"]
    assert body == b"this is not a header\r\nmore\r\n"


def test_oversize_header_section_becomes_body() -> None:
    data = b"A: " + b"x" * 100 + b"\r\nB: " + b"y" * 2000 + b"\r\n\r\nbody"
    p, body = parse(data, max_size=500)
    assert [h.name for h in p.headers] == ["A"]
    assert body.startswith(b"B: yyy") and body.endswith(b"body")


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_split_invariance_and_no_loss(data: bytes, cuts: list[int]) -> None:
    whole, body = parse(data)
    p = HeaderParser()
    got = b""
    last = 0
    for c in sorted(set(cuts)):
        got += p.feed(data[last:c])
        last = max(last, c)
    got += p.feed(data[last:]) + p.close()
    assert [(h.name, h.value) for h in p.headers] == [(h.name, h.value) for h in whole.headers]
    assert got == body
