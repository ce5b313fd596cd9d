"""STARTTLS and AUTH in the server protocol core, driven directly (no sockets)."""

from __future__ import annotations

import base64

from mailwright.core.reply import Reply
from mailwright.smtp import events as ev
from mailwright.smtp.server import ServerConnection, ServerSettings, State, decode_sasl

from .driver import Driver, codes

EHLO = b"EHLO client.test\r\n"


def tls_session(**attrs: object) -> Driver:
    d = Driver(ServerSettings(hostname="mx.test"))
    d.conn.tls_available = True
    for name, value in attrs.items():
        setattr(d.conn, name, value)
    return d


def upgrade(d: Driver) -> None:
    """What the edge does after answering 220 to STARTTLS."""
    assert d.conn.state is State.TLS
    d.conn.tls_started()


def test_starttls_advertised_until_tls_then_not_again() -> None:
    d = tls_session()
    assert "STARTTLS" in [line[4:] for line in d.feed(EHLO).decode().split("\r\n")]
    assert d.replies(b"STARTTLS\r\n") == ["220 2.0.0 Ready to start TLS"]
    upgrade(d)
    out = d.feed(EHLO)
    assert b"STARTTLS" not in out
    assert d.replies(b"STARTTLS\r\n") == ["503 5.5.1 TLS already active"]


def test_starttls_takes_no_argument_and_is_refused_inside_a_transaction() -> None:
    d = tls_session()
    d.feed(EHLO)
    assert d.replies(b"STARTTLS now\r\n") == ["501 5.5.4 STARTTLS takes no arguments"]
    d.feed(b"MAIL FROM:<a@x.test>\r\n")
    assert codes(d.replies(b"STARTTLS\r\n")) == [503]


def test_starttls_without_tls_is_502() -> None:
    d = Driver(ServerSettings(hostname="mx.test"))
    d.feed(EHLO)
    assert d.replies(b"STARTTLS\r\n") == ["502 5.5.1 TLS not available"]


def test_commands_pipelined_behind_starttls_are_never_executed() -> None:
    d = tls_session()
    d.feed(EHLO)
    out = d.replies(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    assert out == ["220 2.0.0 Ready to start TLS"]  # no reply to the injected lines
    upgrade(d)
    assert not any(isinstance(e, ev.MailFrom) for e in d.events)
    d.feed(EHLO)
    assert codes(d.replies(b"RCPT TO:<b@y.test>\r\n")) == [503]  # no MAIL survived


def test_tls_started_forgets_hello_auth_and_buffered_input() -> None:
    d = tls_session(auth_mechanisms=("PLAIN",))
    d.feed(EHLO)
    d.feed(b"STARTTLS\r\n")
    d.conn.receive(b"NOOP\r\n")  # plaintext read before the handshake finished
    upgrade(d)
    assert d.conn.hello is None and not d.conn.esmtp and not d.conn.authenticated
    assert d.conn.next_event() is None and d.conn.data_to_send() == b""
    assert codes(d.replies(b"MAIL FROM:<a@x.test>\r\n")) == [503]  # EHLO again first


def test_auth_needs_tls_when_asked() -> None:
    d = tls_session(auth_mechanisms=("PLAIN", "LOGIN"), auth_requires_tls=True)
    assert b"AUTH" not in d.feed(EHLO)
    assert d.replies(b"AUTH PLAIN AGEAYg==\r\n") == [
        "538 5.7.11 Encryption required for requested authentication mechanism"
    ]
    assert not any(isinstance(e, ev.Auth) for e in d.events)
    # AUTH= on MAIL is only known once AUTH is offered
    assert codes(d.replies(b"MAIL FROM:<a@x.test> AUTH=<>\r\n")) == [555]
    d.feed(b"STARTTLS\r\n")
    upgrade(d)
    assert b"250-AUTH PLAIN LOGIN\r\n" in d.feed(EHLO)  # REQUIRETLS comes last


def test_auth_sequence_rules() -> None:
    d = tls_session(auth_mechanisms=("PLAIN",))
    assert d.replies(b"AUTH PLAIN\r\n") == ["503 5.5.1 Send EHLO first"]
    d.feed(EHLO)
    assert codes(d.replies(b"AUTH CRAM-MD5\r\n")) == [504]
    assert codes(d.replies(b"AUTH PLAIN a b\r\n")) == [501]
    d.feed(b"MAIL FROM:<a@x.test>\r\n")
    assert d.replies(b"AUTH PLAIN AGEAYg==\r\n") == [
        "503 5.5.1 AUTH not allowed inside a transaction"
    ]
    d.feed(b"RSET\r\n")
    assert d.replies(b"AUTH PLAIN AGEAYg==\r\n") == ["235 2.7.0 Authentication successful"]
    assert d.conn.authenticated
    assert d.replies(b"AUTH PLAIN AGEAYg==\r\n") == ["503 5.5.1 Already authenticated"]
    assert b"AUTH" not in d.feed(EHLO)


def test_challenge_then_response_line() -> None:
    conn = ServerConnection(ServerSettings(hostname="mx.test"))
    conn.auth_mechanisms = ("LOGIN",)
    conn.greet()
    conn.receive(EHLO)
    assert isinstance(conn.next_event(), ev.Hello)
    conn.respond(None)
    conn.receive(b"AUTH LOGIN\r\n")
    event = conn.next_event()
    assert event == ev.Auth("LOGIN", None)
    conn.challenge(b"Username:")
    conn.data_to_send()
    assert conn.data_to_send() == b""
    conn.receive(b"YWxpY2U=\r\n")
    assert conn.next_event() == ev.Auth("", "YWxpY2U=")
    conn.challenge(b"Password:")
    assert conn.data_to_send() == b"334 " + base64.b64encode(b"Password:") + b"\r\n"
    conn.receive(b"*\r\n")
    assert conn.next_event() == ev.Auth("", "*")
    conn.respond(Reply.of(501, "5.7.0", "Authentication cancelled"))
    assert conn.data_to_send() == b"501 5.7.0 Authentication cancelled\r\n"
    assert conn.state is State.COMMAND and not conn.authenticated


def test_bad_line_during_auth_ends_the_exchange() -> None:
    conn = ServerConnection(ServerSettings(hostname="mx.test"))
    conn.auth_mechanisms = ("LOGIN",)
    conn.greet()
    conn.receive(EHLO)
    conn.next_event()
    conn.respond(None)
    conn.receive(b"AUTH LOGIN\r\n")
    conn.next_event()
    conn.challenge(b"Username:")
    conn.data_to_send()
    conn.receive(b"bare lf\nNOOP\r\n")
    assert conn.next_event() is None
    out = conn.data_to_send()
    assert out.startswith(b"500 5.5.2") and out.endswith(b"250 2.0.0 OK\r\n")
    assert conn.state is State.COMMAND


def test_decode_sasl() -> None:
    assert decode_sasl("*") is None
    assert decode_sasl("=") == b""
    assert decode_sasl("AGEAYg==") == b"\0a\0b"
    for bad in ("not base64!", "AGE"):
        try:
            decode_sasl(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_partial_input_tells_the_command_clock() -> None:
    conn = ServerConnection(ServerSettings(hostname="mx.test"))
    conn.greet()
    conn.receive(b"NO")
    assert conn.next_event() is None and conn.partial_input
    conn.receive(b"OP\r\n")
    assert conn.next_event() is None and not conn.partial_input
