"""The command parser against hostile input (issue 12): non-ASCII digits and keywords,
paths without angle brackets, HELP, the refusals the core reports to its driver, and the
content deadline's arithmetic."""

from __future__ import annotations

import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailwright.edge.pacing import DataClock
from mailwright.smtp import events as ev
from mailwright.smtp.command import (
    CommandError,
    ascii_number,
    parse_mail,
    parse_rcpt,
)
from mailwright.smtp.data import DataLimits
from mailwright.smtp.extensions import Extensions
from mailwright.smtp.server import ServerSettings, State

from .driver import Driver, codes

EHLO = b"EHLO client.test\r\n"

# every character str.isdigit() accepts (superscripts, Arabic-Indic, fullwidth, ...);
# int() accepts the decimal ones among them, so each used to be a number or a crash
UNICODE_DIGITS = [chr(i) for i in range(sys.maxunicode + 1) if chr(i).isdigit()]
NON_ASCII_DIGITS = [c for c in UNICODE_DIGITS if not c.isascii()]

# a number with at least one non-ASCII digit somewhere
mixed_numbers = st.tuples(
    st.text(alphabet="0123456789", max_size=5),
    st.sampled_from(NON_ASCII_DIGITS),
    st.text(alphabet=st.sampled_from(UNICODE_DIGITS), max_size=5),
).map("".join)


def session(**kw: object) -> Driver:
    d = Driver(ServerSettings(hostname="mx.test", **kw))  # type: ignore[arg-type]
    d.feed(EHLO)
    return d


def test_the_digit_class_is_large() -> None:
    assert len(NON_ASCII_DIGITS) > 500 and "²" in NON_ASCII_DIGITS and "٣" in NON_ASCII_DIGITS


@given(mixed_numbers)
@example("²")
@example("١٢٣")  # Arabic-Indic: int() made it 123
@example("\uff11\uff10")  # fullwidth
def test_size_with_any_non_ascii_digit_is_501(number: str) -> None:
    d = session()
    out = d.replies(f"MAIL FROM:<a@x.test> SIZE={number}\r\n".encode())
    assert len(out) == 1 and out[0].startswith("501 5.5.4"), out
    assert not any(isinstance(e, ev.MailFrom) for e in d.events)
    assert codes(d.replies(b"MAIL FROM:<a@x.test> SIZE=10\r\n")) == [250]  # still in step


@given(mixed_numbers, st.booleans())
@example("²", False)
@example("٣", True)
def test_bdat_with_any_non_ascii_digit_is_501_and_closes(number: str, last: bool) -> None:
    d = session()
    d.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    out = d.replies(f"BDAT {number}{' LAST' if last else ''}\r\n".encode())
    assert len(out) == 1 and out[0].startswith("501 5.5.4"), out
    assert d.conn.state is State.CLOSED


@given(st.text(max_size=30))
@example("1_000")  # int() accepts underscores
@example(" 7")
@example("7\u2000LAST")  # str.split() splits at U+2000
@example("7 LA\u017fT")  # long s upper-cases to S
def test_bdat_size_is_exactly_ascii_digits(text: str) -> None:
    d = session()
    d.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    line = f"BDAT {text}"
    if "\r" in line or "\n" in line or "\0" in line:
        return
    out = d.replies(line.encode() + b"\r\n")
    words = [w for w in text.split(" ") if w]
    valid = (
        1 <= len(words) <= 2
        and words[0].isascii()
        and words[0].isdigit()
        and len(words[0]) <= 20
        and (len(words) == 1 or (words[1].isascii() and words[1].upper() == "LAST"))
    )
    if not valid:
        assert out and out[0].startswith("501 5.5.4"), out
    else:
        assert not out or not out[0].startswith("501"), out


@given(st.text(min_size=1, max_size=25))
def test_ascii_number_matches_the_rfc_grammar(text: str) -> None:
    expected = int(text) if all("0" <= c <= "9" for c in text) and len(text) <= 20 else None
    assert ascii_number(text, 20) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a@x.test> BODY=8B\xc4\xb1TM\xc4\xb1ME",  # dotless i upper-cases to I
        b"MAIL FROM:<a@x.test> RET=FULL\xc5\xbf",
        b"MAIL FROM:<a@x.test> \xc5\xbfIZE=10",  # long s upper-cases to S
    ],
)
def test_non_ascii_keywords_do_not_match(line: bytes) -> None:
    d = session()
    assert d.replies(line + b"\r\n")[0][:3] in ("501", "555")


def test_non_ascii_notify_and_verb_do_not_match() -> None:
    d = session()
    d.feed(b"MAIL FROM:<a@x.test>\r\n")
    out = d.replies("RCPT TO:<b@y.test> NOTIFY=\u017fUCCE\u017f\u017f\r\n".encode())
    assert out[0].startswith("501 5.5.4")
    assert d.replies(b"RCPT TO:<b@y.test>\r\nNOOP\r\n") != []
    d2 = session()
    assert d2.replies("MA\u0131L FROM:<a@x.test>\r\n".encode())[0].startswith("500 5.5.1")


def test_every_non_ascii_digit_refused_in_every_numeric_place() -> None:
    for digit in NON_ASCII_DIGITS:
        d = session()
        out = d.replies(
            f"MAIL FROM:<a@x.test> SIZE={digit}\r\nMAIL FROM:<a@x.test>\r\n"
            f"RCPT TO:<b@y.test> NOTIFY={digit}\r\nBDAT {digit}\r\n".encode()
        )
        assert codes(out) == [501, 250, 501, 501], (digit, out)


# ---- paths without angle brackets (Postfix's strict_rfc821_envelopes = no) ----------------
def test_bare_paths_accepted_with_parameters() -> None:
    d = session()
    out = d.replies(b"MAIL FROM:a@x.test SIZE=10\r\nRCPT TO: b@y.test NOTIFY=NEVER\r\n")
    assert codes(out) == [250, 250]
    mail = next(e for e in d.events if isinstance(e, ev.MailFrom))
    rcpt = next(e for e in d.events if isinstance(e, ev.RcptTo))
    assert str(mail.sender) == "a@x.test" and mail.params.size == 10
    assert mail.raw_path == "<a@x.test>" and rcpt.raw_path == "<b@y.test>"
    assert str(rcpt.recipient.address) == "b@y.test"


def test_bare_paths_refused_when_strict() -> None:
    d = session(strict_envelopes=True)
    assert d.replies(b"MAIL FROM:a@x.test\r\n")[0].startswith("501 5.5.4")
    d.feed(b"MAIL FROM:<a@x.test>\r\n")
    assert d.replies(b"RCPT TO:b@y.test\r\n")[0].startswith("501 5.5.4")


def test_empty_or_broken_bare_path() -> None:
    ext = Extensions()
    with pytest.raises(CommandError) as syntax:
        parse_mail("FROM:", ext)
    assert syntax.value.reply.code == 501
    with pytest.raises(CommandError) as address:
        parse_rcpt("TO:a@@b", ext, utf8=False)
    assert address.value.reply.code == 553


# ---- HELP -------------------------------------------------------------------------------
def test_help_lists_vrfy_only_when_on() -> None:
    off = session().feed(b"HELP\r\n").decode()
    on = session(vrfy=True).feed(b"HELP\r\n").decode()
    assert "VRFY" not in off and "MAIL" in off
    assert "VRFY" in on
    assert "BDAT" not in session(chunking=False).feed(b"HELP\r\n").decode()


# ---- refusals the core answers on its own are reported to the driver --------------------
def refusals(d: Driver) -> list[tuple[str, int, str | None]]:
    return [(r.stage, r.reply.code, r.arg) for r in d.conn.take_refusals()]


def test_core_refusals_are_reported() -> None:
    d = session(data_limits=DataLimits(max_size=100), max_recipients=1)
    d.feed(
        b"MAIL FROM:<a@@x.test>\r\nMAIL FROM:<a@x.test> SIZE=1000\r\n"
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@@y>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n"
    )
    assert refusals(d) == [
        ("mail", 553, "<a@@x.test>"),
        ("mail", 552, "<a@x.test>"),
        ("rcpt", 553, "<b@@y>"),
        ("rcpt", 452, "<c@y.test>"),
    ]
    assert refusals(d) == []  # taken once


def test_too_many_errors_and_pipelining_reported() -> None:
    d = session(max_bad_commands=2)
    d.feed(b"FOO\r\nBAR\r\n")
    assert refusals(d) == [("command", 421, None)]
    d = session()
    d.feed(b"EHLO again.test\r\nNOOP\r\n")
    assert [(r.stage, r.reply.code, r.reason) for r in d.conn.take_refusals()] == [
        ("command", 554, "improper pipelining after EHLO")
    ]


# ---- the content deadline ------------------------------------------------------------------
def test_data_clock_extends_by_octets_at_the_minimum_rate() -> None:
    clock = DataClock(timeout=10, min_rate=500)
    assert clock.before_read(100.0) == 110.0
    clock.after_read(1, 105.0)  # a drip buys 2 ms
    assert clock.before_read(105.0) == pytest.approx(110.002)
    clock.after_read(1000, 105.0)  # 1000 octets buy 2 s
    assert clock.before_read(105.0) == pytest.approx(112.002)
    clock.after_read(10**9, 106.0)  # never more than the timeout ahead of now
    assert clock.before_read(106.0) == 116.0
    assert clock.received == 1 + 1000 + 10**9
    clock.stop()
    assert clock.before_read(200.0) == 210.0 and clock.received == 0


def test_data_clock_without_rate_is_a_per_read_timeout() -> None:
    clock = DataClock(timeout=10, min_rate=0)
    assert clock.before_read(100.0) == 110.0
    clock.after_read(1, 105.0)
    assert clock.before_read(105.0) == 115.0


def test_non_ascii_auth_mechanism_does_not_match() -> None:
    d = Driver(ServerSettings(hostname="mx.test"))
    d.conn.auth_mechanisms = ("PLAIN",)
    d.feed(EHLO)
    assert d.replies("AUTH PLA\u0131N\r\n".encode())[0].startswith("504 5.5.4")
