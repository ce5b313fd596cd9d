"""Reading a message the way Sendmail does, and completing it as a submission server."""

from __future__ import annotations

import os
import re
import threading

import pytest

from mailwright.cli.draft import (
    Draft,
    MessageTooBigError,
    qualify_address_list,
    read_input,
    split_argument,
    to_crlf,
)


def read(data: bytes, ignore_dots: bool = False, limit: int = 0) -> bytes:
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(data)

    t = threading.Thread(target=feed)
    t.start()
    try:
        return read_input(r, ignore_dots, limit)
    finally:
        os.close(r)
        t.join()


def test_lone_dot_ends_input_and_double_dot_loses_one() -> None:
    assert read(b"a\n..b\n.c\n.\nnot read\n") == b"a\r\n.b\r\n.c\r\n"
    assert read(b".\nnothing\n") == b""
    assert read(b"a\r\n.\r\nx") == b"a\r\n"
    assert read(b"a\n.") == b"a\r\n"  # a dot line ended by EOF


def test_with_i_every_line_is_data() -> None:
    assert read(b"a\n..b\n.\nafter\n", ignore_dots=True) == b"a\r\n..b\r\n.\r\nafter\r\n"


def test_lone_dot_stops_reading_at_once_on_a_terminal_like_stream() -> None:
    # the writer keeps the pipe open: reading must stop at the dot, not wait for EOF
    r, w = os.pipe()
    os.write(w, b"line\n.\n")
    try:
        assert read_input(r, ignore_dots=False) == b"line\r\n"
    finally:
        os.close(w)
        os.close(r)


def test_marker_split_across_reads() -> None:
    r, w = os.pipe()
    done: list[bytes] = []
    t = threading.Thread(target=lambda: done.append(read_input(r, False)))
    t.start()
    os.write(w, b"x\n")
    os.write(w, b".")
    os.write(w, b"\n")
    t.join(10)
    os.close(w)
    os.close(r)
    assert done == [b"x\r\n"]


def test_line_endings_and_mbox_from_line() -> None:
    assert to_crlf(b"a\nb\r\nc\rd") == b"a\r\nb\r\nc\r\nd\r\n"
    assert read(b"From someone Thu Nov 26 01:00:00 2026\nSubject: x\n\nbody\n") == (
        b"Subject: x\r\n\r\nbody\r\n"
    )


def test_size_limit_stops_reading() -> None:
    with pytest.raises(MessageTooBigError):
        read(b"x" * 5000, ignore_dots=True, limit=1000)


def test_parse_headers_and_body() -> None:
    d = Draft.parse(b"Subject: a\r\n b\r\nTo: x@y\r\n\r\nbody\r\n")
    assert [n for n, _ in d.fields] == ["Subject", "To"]
    assert d.values("subject") == ["a b"]
    assert d.body == b"body\r\n"
    assert d.encode() == b"Subject: a\r\n b\r\nTo: x@y\r\n\r\nbody\r\n"


def test_text_without_headers_is_all_body_and_gets_a_separator() -> None:
    d = Draft.parse(b"hi\r\n")
    assert d.fields == [] and d.body == b"hi\r\n"
    d.add("From", "a@b")
    assert d.encode() == b"From: a@b\r\n\r\nhi\r\n"
    # a non-header line ends the header section even without an empty line
    d = Draft.parse(b"Subject: s\r\nnot a header\r\nmore\r\n")
    assert d.values("Subject") == ["s"] and d.body == b"not a header\r\nmore\r\n"
    assert d.encode() == b"Subject: s\r\n\r\nnot a header\r\nmore\r\n"


def test_header_recipients_and_bcc_removal() -> None:
    d = Draft.parse(
        b'To: a@x.test, "Doe, B" <b@y.test>\r\nCc: c@z.test (Cee)\r\n'
        b"Bcc: hidden@w.test\r\nTo: list: d@x.test, e@x.test;\r\nSubject: s\r\n\r\n"
    )
    assert d.header_recipients() == [
        "a@x.test",
        "b@y.test",
        "d@x.test",
        "e@x.test",
        "c@z.test",
        "hidden@w.test",
    ]
    d.remove("Bcc")
    assert not d.has("bcc") and b"hidden" not in d.encode()
    assert Draft.parse(b"To: undisclosed-recipients:;\r\n\r\n").header_recipients() == []


def test_complete_adds_only_what_is_missing() -> None:
    d = Draft.parse(b"Subject: s\r\n\r\nx\r\n")
    d.complete(sender="root@mx.test", full_name="Cron Daemon", hostname="mx.test")
    assert d.values("From") == ["Cron Daemon <root@mx.test>"]
    assert re.fullmatch(
        r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}",
        d.values("Date")[0],
    )
    assert re.fullmatch(r"<[0-9A-Z]{15}@mx\.test>", d.values("Message-ID")[0])
    kept = Draft.parse(b"From: me\r\nDate: x\r\nMessage-Id: <a@b>\r\n\r\n")
    kept.complete(sender="root@mx.test", full_name="", hostname="mx.test")
    assert len(kept.fields) == 3


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", "root@mx.test"),
        ("Joe Q. Public", '"Joe Q. Public" <root@mx.test>'),
        ("Zoë", "=?utf-8?b?Wm/Dqw==?= <root@mx.test>"),
    ],
)
def test_from_display_names(name: str, expected: str) -> None:
    d = Draft.parse(b"\r\n")
    d.complete(sender="root@mx.test", full_name=name, hostname="h")
    assert d.values("From") == [expected]


def test_split_argument() -> None:
    assert split_argument("user") == ["user"]
    assert split_argument("a@b, c@d") == ["a@b", "c@d"]
    assert split_argument("Ann <a@b>") == ["a@b"]
    assert split_argument("  ") == []


# ---- qualifying header addresses (issue 12 item 15) ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "qualified"),
    [
        (" alice", " alice@mx.test"),
        (" alice, Bob <bob>, c@x.test", " alice@mx.test, Bob <bob@mx.test>, c@x.test"),
        (" Team: alice, bob;", " Team: alice@mx.test, bob@mx.test;"),
        (" undisclosed-recipients:;", " undisclosed-recipients:;"),
        (" alice (the boss)", " alice@mx.test (the boss)"),
        (' "Doe, John" <jd>, x', ' "Doe, John" <jd@mx.test>, x@mx.test'),
        (" first.last,\r\n\troot", " first.last@mx.test,\r\n\troot@mx.test"),
        (" Alice Smith", " Alice Smith"),  # not an address: left alone
        (" <>", " <>"),
        (" a@b (c, d)", " a@b (c, d)"),
        (" <@a,@b:c@d>", " <@a,@b:c@d>"),
        (" =?utf-8?q?x?= <alice>", " =?utf-8?q?x?= <alice@mx.test>"),
    ],
)
def test_qualify_address_list(value: str, qualified: str) -> None:
    assert qualify_address_list(value, "mx.test") == qualified


def test_only_address_fields_are_qualified() -> None:
    draft = Draft.parse(b"To: a\r\nSubject: b\r\nResent-Cc: c\r\nX-To: d\r\n\r\nbody\r\n")
    draft.qualify_addresses("mx.test")
    assert draft.encode() == (
        b"To: a@mx.test\r\nSubject: b\r\nResent-Cc: c@mx.test\r\nX-To: d\r\n\r\nbody\r\n"
    )
