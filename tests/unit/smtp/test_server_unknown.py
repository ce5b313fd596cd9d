"""Unknown commands as a decision (``decide_unknown``): the driver's refusal replaces the 500."""

from __future__ import annotations

from mailwright.core.reply import Reply
from mailwright.smtp import events as ev
from mailwright.smtp.server import ServerConnection, ServerSettings


def session(**settings: object) -> ServerConnection:
    conn = ServerConnection(ServerSettings(hostname="mx.test", **settings))  # type: ignore[arg-type]
    conn.greet()
    conn.data_to_send()
    conn.receive(b"EHLO c.test\r\n")
    assert isinstance(conn.next_event(), ev.Hello)
    conn.respond(None)
    conn.data_to_send()
    return conn


def test_without_decide_unknown_the_core_answers_500_itself() -> None:
    conn = session()
    conn.receive(b"FROB x\r\nNOOP\r\n")
    assert conn.next_event() == ev.Unknown("FROB x")
    assert conn.next_event() is None
    assert conn.data_to_send() == b"500 5.5.1 Command unrecognized\r\n250 2.0.0 OK\r\n"


def test_a_refusal_replaces_the_500_and_none_keeps_it() -> None:
    conn = session(decide_unknown=True)
    conn.receive(b"FROB x\r\nFROB y\r\nNOOP\r\n")
    assert conn.next_event() == ev.Unknown("FROB x")
    assert conn.next_event() is None and conn.data_to_send() == b""  # waits for the driver
    conn.respond(Reply.of(550, "5.7.1", "Not here"))
    assert conn.next_event() == ev.Unknown("FROB y")
    conn.respond(None)
    assert conn.next_event() is None
    out = conn.data_to_send()
    assert out == b"550 5.7.1 Not here\r\n500 5.5.1 Command unrecognized\r\n250 2.0.0 OK\r\n"


def test_a_421_closes_and_unknown_commands_still_count_as_errors() -> None:
    conn = session(decide_unknown=True)
    conn.receive(b"FROB\r\n")
    conn.next_event()
    conn.respond(Reply.of(421, "4.7.0", "bye"))
    assert conn.data_to_send() == b"421 4.7.0 bye\r\n"
    assert isinstance(conn.next_event(), ev.Closed)
    limited = session(decide_unknown=True, max_bad_commands=2)
    limited.receive(b"FROB\r\nFROB\r\n")
    limited.next_event()
    limited.respond(None)
    limited.next_event()
    limited.respond(Reply.of(550, "5.7.1", "no"))
    assert limited.data_to_send().endswith(b"421 4.7.0 mx.test Too many errors, closing\r\n")
