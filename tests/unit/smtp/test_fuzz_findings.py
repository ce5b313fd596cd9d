"""Regressions for what the fuzz target ``fuzz/smtp_server.py`` found in the server core."""

from __future__ import annotations

from mailwright.smtp import events as ev
from mailwright.smtp.server import ServerConnection, ServerSettings, State


def events_of(conn: ServerConnection, data: bytes) -> list[ev.Event]:
    conn.receive(data)
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
        if conn.state is State.DECIDING:
            conn.respond(None)
    return out


def test_closing_on_a_bad_line_emits_closed_at_once() -> None:
    # the 421 for too many errors came from a malformed line (bare LF): the Closed event
    # used to wait for a later next_event call, so it depended on how input was cut
    conn = ServerConnection(ServerSettings(hostname="mx.test", max_bad_commands=2))
    conn.greet()
    events = events_of(conn, b"MAIL FROM:<a@x.test>\r\nNOOP\n")  # 503, then a bare LF
    assert isinstance(events[-1], ev.Closed) and events[-1].reason == "too many errors"
    assert conn.data_to_send().endswith(b"421 4.7.0 mx.test Too many errors, closing\r\n")
    assert conn.state is State.CLOSED


def test_closing_on_a_bad_sasl_line_emits_closed_at_once() -> None:
    conn = ServerConnection(ServerSettings(hostname="mx.test", max_bad_commands=2))
    conn.auth_mechanisms = ("PLAIN",)
    conn.greet()
    assert isinstance(events_of(conn, b"EHLO c.test\r\n")[0], ev.Hello)
    conn.receive(b"AUTH PLAIN\r\n")
    auth = conn.next_event()
    assert isinstance(auth, ev.Auth)
    conn.challenge(b"")
    events = events_of(conn, b"QUIT\nNOOP\r\nNOOP\n")  # two bad lines: one too many
    assert [type(e) for e in events] == [ev.Closed]
