"""``ScriptFraming``: LF or CRLF in, exact CRLF out; BDAT chunks untouched; session state."""

from __future__ import annotations

import pytest

from mailwright.cli.script_framing import ScriptFraming
from mailwright.smtp.server import ServerSettings
from tests.unit.smtp.driver import Driver


def framed(data: bytes, step: int | None = None) -> tuple[bytes, ScriptFraming]:
    f = ScriptFraming()
    step = step or len(data) or 1
    out = b"".join(f.feed(data[i : i + step]) for i in range(0, len(data), step)) + f.end()
    return out, f


SCRIPT = b"HELO x\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\nDATA\nSubject: s\n\n..dot\nbody\n.\nQUIT"


@pytest.mark.parametrize("step", [None, 1, 2, 7])
def test_lf_and_crlf_become_crlf_in_any_chunking(step: int | None) -> None:
    out, f = framed(SCRIPT, step)
    assert out == SCRIPT.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
    assert f.quit and not f.in_transaction


def test_a_lone_dot_line_ends_data_and_the_transaction() -> None:
    _, f = framed(b"MAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nx\n")
    assert f.in_transaction and not f.quit
    _, f = framed(b"MAIL FROM:<a@x>\nDATA\nx\n.\n")
    assert not f.in_transaction
    _, f = framed(b"MAIL FROM:<a@x>\nRSET\n")
    assert not f.in_transaction


def test_data_content_that_looks_like_commands_is_content() -> None:
    _, f = framed(b"MAIL FROM:<a@x>\nDATA\nQUIT\nBDAT 5\n")
    assert not f.quit and f.in_transaction


def test_bdat_chunks_pass_unchanged() -> None:
    payload = b"a\nb\r\n"
    out, f = framed(b"MAIL FROM:<a@x>\nBDAT 5 LAST\n" + payload + b"QUIT\n", step=3)
    assert out == b"MAIL FROM:<a@x>\r\nBDAT 5 LAST\r\n" + payload + b"QUIT\r\n"
    assert f.quit and not f.in_transaction


def test_a_long_data_line_is_passed_on_before_its_end() -> None:
    f = ScriptFraming()
    f.feed(b"DATA\n")
    out = f.feed(b"." + b"x" * 70000 + b"\r")
    assert len(out) == 70001 and not out.endswith(b"\r")  # the CR may start a CRLF
    assert f.feed(b"\n.\n") == b"\r\n.\r\n"


def test_the_core_takes_a_scripted_batch_only_when_pipelining_is_not_strict() -> None:
    batch, _ = framed(b"HELO x\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nhi\n.\nQUIT\n")
    strict = Driver().replies(batch)
    assert strict[-1].startswith("554 5.5.0 Improper command pipelining after HELO")
    lenient = Driver(ServerSettings(hostname="mx.test", strict_pipelining=False))
    replies = lenient.replies(batch)
    assert [r[:3] for r in replies] == ["250", "250", "250", "354", "250", "221"]
    assert lenient.messages == [b"hi\r\n"]


def test_starttls_still_discards_what_follows_it_when_not_strict() -> None:
    d = Driver(ServerSettings(hostname="mx.test", strict_pipelining=False))
    d.conn.tls_available = True
    d.replies(b"EHLO x\r\n")
    d.replies(b"STARTTLS\r\nMAIL FROM:<a@x>\r\n")
    assert bytes(d.conn._in) == b""
