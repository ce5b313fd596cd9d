"""REQUIRETLS (RFC 8689) in the protocol cores: offered over TLS only, read from MAIL,
and sent by the client when the peer offers it. Driven in memory (no sockets)."""

from __future__ import annotations

from mailwright.core.envelope import MailParams
from mailwright.core.reply import Reply
from mailwright.smtp import events as ev
from mailwright.smtp.client import Transaction, TransactionRecipient
from mailwright.smtp.extensions import Extensions
from mailwright.smtp.server import ServerSettings

from .client_harness import Pair
from .driver import Driver

EHLO = b"EHLO client.test\r\n"
MSG = b"Subject: t\r\n\r\nbody\r\n"


def keywords(out: bytes) -> list[str]:
    return [line[4:] for line in out.decode().split("\r\n")[1:] if line]


def over_tls(settings: ServerSettings | None = None) -> Driver:
    d = Driver(settings or ServerSettings(hostname="mx.test"))
    d.conn.tls_available = True
    d.feed(EHLO)
    assert d.replies(b"STARTTLS\r\n") == ["220 2.0.0 Ready to start TLS"]
    d.conn.tls_started()
    return d


def mail_params(d: Driver) -> MailParams:
    return next(e for e in d.events if isinstance(e, ev.MailFrom)).params


def test_offered_only_once_tls_is_on() -> None:
    d = Driver(ServerSettings(hostname="mx.test"))
    d.conn.tls_available = True
    assert "REQUIRETLS" not in keywords(d.feed(EHLO))
    assert d.replies(b"MAIL FROM:<a@x.test> REQUIRETLS\r\n") == [
        "555 5.5.4 Unsupported parameter REQUIRETLS"
    ]
    d = over_tls()
    assert "REQUIRETLS" in keywords(d.feed(EHLO))
    assert d.replies(b"MAIL FROM:<a@x.test> requiretls\r\n") == ["250 2.1.0 Sender <a@x.test> OK"]
    assert mail_params(d).requiretls


def test_a_plain_mail_over_tls_does_not_ask_for_it() -> None:
    d = over_tls()
    d.feed(EHLO)
    d.feed(b"MAIL FROM:<a@x.test>\r\n")
    assert not mail_params(d).requiretls


def test_it_takes_no_value() -> None:
    d = over_tls()
    d.feed(EHLO)
    assert d.replies(b"MAIL FROM:<a@x.test> REQUIRETLS=YES\r\n") == [
        "501 5.5.4 REQUIRETLS takes no value"
    ]


def test_switched_off_or_lmtp_it_is_not_offered() -> None:
    for settings in (
        ServerSettings(hostname="mx.test", requiretls=False),
        ServerSettings(hostname="mx.test", lmtp=True),
    ):
        d = Driver(settings)
        d.conn.tls_available = True
        hello = b"LHLO client.test\r\n" if settings.lmtp else EHLO
        d.feed(hello)
        d.feed(b"STARTTLS\r\n")
        d.conn.tls_started()
        assert "REQUIRETLS" not in keywords(d.feed(hello))
        assert d.replies(b"MAIL FROM:<a@x.test> REQUIRETLS\r\n") == [
            "555 5.5.4 Unsupported parameter REQUIRETLS"
        ]


def test_the_client_reads_the_keyword() -> None:
    reply = Reply(250, None, ("mx.test", "PIPELINING", "REQUIRETLS"))
    assert Extensions.parse(reply).requiretls
    assert not Extensions.parse(Reply(250, None, ("mx.test", "PIPELINING"))).requiretls


def test_the_client_sends_it_only_to_a_peer_that_offers_it() -> None:
    params = MailParams(requiretls=True)
    rcpt = [TransactionRecipient("b@y.test")]
    plain = Pair(ServerSettings(hostname="mx.test", chunking=False))
    plain.send(Transaction("a@x.test", rcpt, params), MSG)
    assert plain.writes[1].startswith(b"MAIL FROM:<a@x.test>\r\n")  # plain peer: no keyword
    p = Pair(ServerSettings(hostname="mx.test", chunking=False))
    offered = Reply(250, None, ("mx.test", "PIPELINING", "REQUIRETLS"))
    p.client.extensions = Extensions.parse(offered)
    p.server.conn.tls = True  # as after STARTTLS: the server core offers and reads it
    writes = len(p.writes)
    p.send(Transaction("a@x.test", rcpt, params), MSG)
    assert p.writes[writes].startswith(b"MAIL FROM:<a@x.test> REQUIRETLS\r\n")
    assert mail_params(p.server).requiretls
