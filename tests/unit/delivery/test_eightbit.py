"""8BITMIME downgrade: which messages convert, and that quoted-printable decodes back exactly."""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterator

from hypothesis import given
from hypothesis import strategies as st

from mailwright.core.headers import HeaderList, HeaderParser
from mailwright.delivery.eightbit import contains_8bit, downgrade, quoted_printable

from ..smtp.test_properties import split


def parse(message: bytes) -> tuple[HeaderList, bytes]:
    parser = HeaderParser()
    body = parser.feed(message) + parser.close()
    return parser.headers, body


def body_source(body: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter([body[:5], body[5:]])


TEXT = (
    b"From: a@x.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 \r\n.dot\r\n"
)


def test_contains_8bit() -> None:
    assert contains_8bit([b"abc", b"d\xe9"])
    assert not contains_8bit([b"abc", b"\x7f"])


def test_single_part_text_becomes_quoted_printable() -> None:
    headers, body = parse(TEXT)
    converted = downgrade(headers, body_source(body))
    assert converted is not None
    assert converted.headers.encode() == (
        b"From: a@x.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
    )
    assert b"".join(converted.body()) == b"caf=C3=A9=20\r\n.dot\r\n"
    assert b"".join(converted.body()) == b"".join(converted.body())  # re-readable


def test_missing_cte_and_mime_version_are_added() -> None:
    headers, body = parse(b"Content-Type: text/html\r\nSubject: x\r\n\r\n\xff\r\n")
    converted = downgrade(headers, body_source(body))
    assert converted is not None
    assert [h.name for h in converted.headers] == [
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Subject",
    ]


def test_unsafe_conversions_are_refused() -> None:
    cases = [
        b"Subject: caf\xc3\xa9\r\nContent-Type: text/plain\r\n\r\n\xff\r\n",  # 8-bit header
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\n\xff\r\n--x--\r\n",
        b"Content-Type: application/octet-stream\r\n\r\n\xff\r\n",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\n\xff\r\n",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\xff\r\n",
        b"Subject: no content type\r\n\r\n\xff\r\n",
    ]
    for message in cases:
        headers, body = parse(message)
        assert downgrade(headers, body_source(body)) is None, message


@given(
    st.lists(st.binary(max_size=120), max_size=20).map(b"\r\n".join),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_quoted_printable_round_trip_any_split(body: bytes, cuts: list[int]) -> None:
    body = b"\r\n".join(
        line.replace(b"\r", b"").replace(b"\n", b"") for line in body.split(b"\r\n")
    )
    encoded = b"".join(quoted_printable(split(body, cuts)))
    assert encoded.isascii()
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert binascii.a2b_qp(encoded) == body
