"""The PLAIN and LOGIN exchanges (sans-I/O)."""

from __future__ import annotations

from mailwright.smtp import sasl


def test_plain_with_initial_response() -> None:
    step = sasl.exchange_for("plain").start(b"\0alice\0s3cret")
    assert step == sasl.Credentials("alice", "s3cret")
    assert "s3cret" not in repr(step)


def test_plain_without_initial_response_asks_with_an_empty_challenge() -> None:
    exchange = sasl.exchange_for("PLAIN")
    assert exchange.start(None) == sasl.Challenge(b"")
    assert exchange.step(b"alice\0alice\0pw") == sasl.Credentials("alice", "pw")


def test_plain_refuses_malformed_data_and_proxy_authorisation() -> None:
    for data in (b"", b"alice\0pw", b"\0a\0b\0c", b"\0\xff\0pw"):
        assert sasl.PlainExchange().start(data) == sasl.Failure(sasl.MALFORMED), data
    # acting for someone else is not supported: checked as a wrong password
    assert sasl.PlainExchange().start(b"bob\0alice\0pw") == sasl.Credentials("alice", "")


def test_login_dialogue() -> None:
    exchange = sasl.exchange_for("LOGIN")
    assert exchange.start(None) == sasl.Challenge(b"Username:")
    assert exchange.step(b"alice") == sasl.Challenge(b"Password:")
    assert exchange.step(b"pw") == sasl.Credentials("alice", "pw")


def test_login_initial_response_is_the_user_name() -> None:
    exchange = sasl.exchange_for("LOGIN")
    assert exchange.start(b"alice") == sasl.Challenge(b"Password:")
    assert exchange.step(b"x" * 2000) == sasl.Failure(sasl.MALFORMED)
