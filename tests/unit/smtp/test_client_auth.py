"""SMTP AUTH in the client core (RFC 4954): PLAIN with an initial response, LOGIN's two
challenges, refusals, the refusal to log in without TLS, and no password in any text."""

from __future__ import annotations

import base64

import pytest

from mailwright.core.reply import Reply
from mailwright.smtp.client import (
    Authenticated,
    AuthFailed,
    AuthSkipped,
    ClientEvent,
    Credentials,
    Phase,
    SessionFailed,
    SessionReady,
    TransactionDone,
)
from mailwright.smtp.extensions import Extensions

from .client_harness import Scripted, txn

SECRET = "s3cret:pass word"
LOGIN = Credentials("relayuser", SECRET)


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def session(auth: str = "PLAIN LOGIN", tls: bool = True) -> Scripted:
    """A scripted peer that offered ``auth`` (after STARTTLS when ``tls``)."""
    s = Scripted()
    ehlo = b"250-mx.test\r\n250-PIPELINING\r\n"
    if auth:
        ehlo += f"250-AUTH {auth}\r\n".encode()
    s.feed(b"220 mx.test\r\n" + ehlo + b"250 STARTTLS\r\n")
    if tls:
        s.client.starttls()
        s.feed(b"220 go ahead\r\n")
        s.client.tls_started()
        s.feed(ehlo + b"250 8BITMIME\r\n")
    s.take()
    return s


def no_secret(events: list[ClientEvent]) -> None:
    for event in events:
        text = repr(event)
        assert SECRET not in text and b64(SECRET).decode() not in text


def test_plain_sends_the_initial_response_and_235_logs_in() -> None:
    s = session()
    s.client.authenticate(LOGIN)
    assert s.take() == b"AUTH PLAIN " + b64(f"\0relayuser\0{SECRET}") + b"\r\n"
    assert s.client.waiting_for is Phase.AUTH
    events = s.feed(b"235 2.7.0 Authentication successful\r\n")
    assert isinstance(events[0], Authenticated) and events[0].mechanism == "PLAIN"
    s.client.begin(txn("b@y.test"))  # READY again: the transaction may start
    assert s.take().startswith(b"MAIL FROM:<a@x.test>\r\n")
    no_secret(events)


def test_login_answers_the_two_challenges() -> None:
    s = session("LOGIN CRAM-MD5")
    s.client.authenticate(LOGIN)
    assert s.take() == b"AUTH LOGIN\r\n"
    assert s.feed(b"334 VXNlcm5hbWU6\r\n") == []
    assert s.take() == b64("relayuser") + b"\r\n"
    assert s.feed(b"334 UGFzc3dvcmQ6\r\n") == []
    assert s.take() == b64(SECRET) + b"\r\n"
    events = s.feed(b"235 2.7.0 ok\r\n")
    assert isinstance(events[0], Authenticated) and events[0].mechanism == "LOGIN"


def test_plain_is_preferred_whatever_the_order_offered() -> None:
    s = session("LOGIN PLAIN")
    s.client.authenticate(LOGIN)
    assert s.take().startswith(b"AUTH PLAIN ")


@pytest.mark.parametrize("code", [535, 454])
def test_refused_login_is_a_temporary_failure_naming_the_user_only(code: int) -> None:
    s = session()
    s.client.authenticate(LOGIN)
    s.take()
    status = f"{code // 100}.7.8"
    events = s.feed(f"{code} {status} Authentication credentials invalid\r\n".encode())
    failed = events[0]
    assert isinstance(failed, AuthFailed)
    assert failed.reply.code == 451 and failed.reply.status == "4.7.0"
    assert f"{code} {status} Authentication credentials invalid" in failed.reply.text
    assert "relayuser" in failed.reply.text
    assert failed.peer_reply is not None and failed.peer_reply.code == code
    no_secret(events)
    s.client.quit()  # the driver ends the session; the core is usable for that
    assert s.take() == b"QUIT\r\n"


def test_an_extra_challenge_is_cancelled_and_fails() -> None:
    s = session("PLAIN")
    s.client.authenticate(LOGIN)
    s.take()
    assert s.feed(b"334 \r\n") == []
    assert s.take() == b"*\r\n"
    events = s.feed(b"501 5.7.0 Authentication cancelled\r\n")
    assert isinstance(events[0], AuthFailed)
    assert "334" in events[0].reply.text


def test_no_tls_no_credentials_unless_allowed() -> None:
    s = session(tls=False)
    s.client.authenticate(LOGIN)
    events = s.feed(b"")
    assert isinstance(events[0], AuthFailed) and events[0].peer_reply is None
    assert events[0].reply.status == "4.7.0"
    assert "refusing to send credentials without TLS" in events[0].reply.text
    assert s.take() == b""  # nothing went over the wire
    s.client.authenticate(LOGIN, allow_plaintext=True)
    assert s.take().startswith(b"AUTH PLAIN ")


def test_peer_without_auth_gets_the_mail_without_a_login() -> None:
    s = session("")
    s.client.authenticate(LOGIN)
    assert isinstance(s.feed(b"")[0], AuthSkipped)
    assert s.take() == b""
    s.client.begin(txn("b@y.test"))


def test_only_unknown_mechanisms_fail_without_sending() -> None:
    s = session("CRAM-MD5 XOAUTH2")
    s.client.authenticate(LOGIN)
    failed = s.feed(b"")[0]
    assert isinstance(failed, AuthFailed) and "CRAM-MD5 XOAUTH2" in failed.reply.text
    assert s.take() == b""


def test_421_or_eof_during_auth_ends_the_session() -> None:
    s = session()
    s.client.authenticate(LOGIN)
    events = s.feed(b"421 4.3.2 shutting down\r\n")
    assert isinstance(events[0], SessionFailed) and events[0].phase is Phase.AUTH
    s = session()
    s.client.authenticate(LOGIN)
    s.client.receive_eof()
    lost = s.client.next_event()
    assert isinstance(lost, SessionFailed) and "reply to AUTH" in lost.reply.text


def test_old_style_auth_keyword_is_understood() -> None:
    ext = Extensions.parse(Reply.of(250, None, "mx.test", "AUTH=LOGIN PLAIN"))
    assert ext.auth == ("LOGIN", "PLAIN")
    s = Scripted()
    events = s.feed(b"220 mx.test\r\n250-mx.test\r\n250 AUTH=LOGIN\r\n")
    assert isinstance(events[0], SessionReady) and events[0].extensions.auth == ("LOGIN",)


def test_credentials_hide_the_password_and_refuse_line_breaks() -> None:
    assert SECRET not in repr(LOGIN) and str(LOGIN) == "relayuser"
    with pytest.raises(ValueError) as info:
        Credentials("u", "bad\r\npassword")
    assert "bad" not in str(info.value)
    with pytest.raises(ValueError):
        Credentials("", "x")


def test_transaction_after_login_is_unchanged() -> None:
    s = session()
    s.client.authenticate(LOGIN)
    s.feed(b"235 2.7.0 ok\r\n")
    s.client.begin(txn("b@y.test"))
    s.take()
    events = s.feed(b"250 ok\r\n550 5.1.1 no\r\n554 no valid recipients\r\n")
    done = events[-1]
    assert isinstance(done, TransactionDone)
    assert done.result.replies[0].reply.code == 550
