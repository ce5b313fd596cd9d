"""The SMTP/LMTP agents' decisions: DNS outcomes, host order, screening, per-recipient LMTP
results, content errors, concurrency. Peers are real loopback servers (``SmtpPeer``)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailwright.core.delivery import DeliveryResult
from mailwright.core.reply import Reply
from mailwright.delivery.agent import DeliveryRequest
from mailwright.delivery.lmtp import LmtpAgent
from mailwright.delivery.session import ClientTimeouts, TlsPolicy
from mailwright.delivery.smtp import SmtpAgent, as_transient, with_status
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.resolver import (
    DnsPermanentError,
    DnsTemporaryError,
    MailHost,
    NullMxError,
)
from mailwright.routing.tlsrpt import Result, TlsRecorder
from mailwright.smtp import events as ev
from mailwright.smtp.server import ServerSettings
from tests.support.daemon import free_port
from tests.support.delivery_request import request, smtp_hop
from tests.support.security import certificate
from tests.support.smtp_peer import SmtpPeer
from tests.support.static_resolver import StaticResolver

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def summary(results: list[DeliveryResult]) -> list[tuple[str, int, str | None]]:
    return [(r.outcome.value, r.reply.code, r.reply.status) for r in results]


async def deliver(agent: SmtpAgent, req: DeliveryRequest) -> list[DeliveryResult]:
    try:
        return await agent.deliver(req)
    finally:
        await agent.close()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DnsTemporaryError("SERVFAIL"), ("deferred", 451, "4.4.3")),
        (NullMxError("null MX"), ("failed", 556, "5.1.10")),
        (DnsPermanentError("NXDOMAIN"), ("failed", 550, "5.1.2")),
    ],
)
def test_dns_outcomes(error: Exception, expected: tuple[str, int, str]) -> None:
    resolver = StaticResolver(mx={"example.test": error})
    agent = SmtpAgent("client.test", resolver)
    results = run(deliver(agent, request(smtp_hop("example.test", mx=True), "b@y", "c@y")))
    assert summary(results) == [expected, expected]
    assert "example.test" in results[0].reply.text and results[0].remote_mta == ""


def test_no_hosts_at_all_fails() -> None:
    agent = SmtpAgent("client.test", StaticResolver(mx={"example.test": []}))
    results = run(deliver(agent, request(smtp_hop("example.test", mx=True))))
    assert summary(results) == [("failed", 550, "5.1.2")]


def test_ip_literal_needs_no_dns_and_host_hops_use_addresses() -> None:
    async def main() -> None:
        async with SmtpPeer() as peer:
            resolver = StaticResolver(hosts={"relay.test": [MailHost("relay.test", "127.0.0.1")]})
            agent = SmtpAgent("client.test", resolver)
            a = await agent.deliver(request(smtp_hop("[127.0.0.1]", peer.port)))
            b = await agent.deliver(request(smtp_hop("relay.test", peer.port)))
            await agent.close()
            assert [r.outcome.value for r in a + b] == ["delivered", "delivered"]
            assert b[0].remote_mta == "relay.test [127.0.0.1]"
            assert dict(resolver.lookups) == {"A relay.test": 1}

    run(main())


def test_greeting_refusal_tries_the_next_host_then_defers() -> None:
    refuse = Reply.of(554, None, "go away")
    port = free_port()
    mx1, mx2 = MailHost("mx1.test", "127.0.0.2"), MailHost("mx2.test", "127.0.0.1")
    resolver = StaticResolver(mx={"only-bad.test": [mx1], "example.test": [mx1, mx2]})

    async def main() -> None:
        async with SmtpPeer(greeting=refuse, address="127.0.0.2", port=port) as bad:
            agent = SmtpAgent("client.test", resolver)
            results = await agent.deliver(request(smtp_hop("only-bad.test", port, mx=True)))
            assert summary(results) == [("deferred", 454, "4.0.0")]  # 5xx greeting: soft
            assert results[0].reply.text == "go away"
            assert results[0].remote_mta == "mx1.test [127.0.0.2]"
            async with SmtpPeer(port=port) as good:
                results = await deliver(agent, request(smtp_hop("example.test", port, mx=True)))
                assert summary(results) == [("delivered", 250, "2.0.0")]
                assert results[0].remote_mta == "mx2.test [127.0.0.1]"
                assert len(good.messages) == 1
            assert len(bad.connections) == 2

    run(main())


def test_unsafe_addresses_fail_alone() -> None:
    async def main() -> None:
        async with SmtpPeer() as peer:
            agent = SmtpAgent("client.test", None)
            req = request(smtp_hop("127.0.0.1", peer.port), "b@y.test", "x@y\r\nRSET", "c@y.test")
            results = await deliver(agent, req)
            assert summary(results) == [
                ("delivered", 250, "2.0.0"),
                ("failed", 553, "5.1.3"),
                ("delivered", 250, "2.0.0"),
            ]
            assert peer.messages[0].recipients == ["b@y.test", "c@y.test"]

    run(main())


def test_content_that_cannot_be_read_defers_and_drops_the_session() -> None:
    def broken() -> Iterator[bytes]:
        yield b"first part\r\n"
        raise OSError("disk went away")

    async def main() -> None:
        async with SmtpPeer() as peer:
            agent = SmtpAgent("client.test", None)
            req = request(smtp_hop("127.0.0.1", peer.port))
            req.body = broken
            results = await agent.deliver(req)
            assert summary(results) == [("deferred", 451, "4.3.0")]
            assert "disk went away" in results[0].reply.text
            assert agent.pool.idle_count() == 0
            again = await deliver(agent, request(smtp_hop("127.0.0.1", peer.port)))
            assert summary(again) == [("delivered", 250, "2.0.0")]
            assert len(peer.messages) == 1

    run(main())


def test_lmtp_per_recipient_replies_from_the_server_core() -> None:
    def decide(event: ev.Event) -> Reply | list[Reply] | None:
        if isinstance(event, ev.RcptTo) and event.recipient.address.local == "unknown":
            return Reply.of(550, "5.1.1", "no such user")
        if isinstance(event, ev.ContentEnd):
            return [Reply.of(250, "2.0.0", "saved"), Reply.of(452, None, "over quota")]
        return None

    async def main() -> None:
        async with SmtpPeer(ServerSettings(hostname="lmtp.test", lmtp=True), decide=decide) as peer:
            agent = LmtpAgent("client.test", None)
            hop = NextHop(Transport.LMTP, host="127.0.0.1", port=peer.port, mx=False)
            results = await deliver(agent, request(hop, "a@y", "unknown@y", "b@y"))
            assert summary(results) == [
                ("delivered", 250, "2.0.0"),
                ("failed", 550, "5.1.1"),
                ("deferred", 452, "4.0.0"),  # no enhanced status: derived from the class
            ]
            assert results[2].reply.text == "over quota"

    run(main())


def test_lmtp_host_names_use_the_system_resolver_without_a_resolver() -> None:
    async def main() -> None:
        async with SmtpPeer(ServerSettings(hostname="lmtp.test", lmtp=True)) as peer:
            agent = LmtpAgent("client.test", None)
            hop = NextHop(Transport.LMTP, host="localhost", port=peer.port, mx=False)
            results = await deliver(agent, request(hop))
            assert [r.outcome.value for r in results] == ["delivered"]
            assert results[0].remote_mta.startswith("localhost [")

    run(main())


def test_parallel_deliveries_share_a_bounded_pool() -> None:
    async def main() -> None:
        async with SmtpPeer() as peer:
            agent = SmtpAgent("client.test", None, max_idle=3)
            hop = smtp_hop("127.0.0.1", peer.port)
            batches = [agent.deliver(request(hop, f"r{i}@y.test")) for i in range(10)]
            results = [r for batch in await asyncio.gather(*batches) for r in batch]
            assert all(r.outcome.value == "delivered" for r in results)
            assert agent.pool.idle_count(hop.key) == 3
            again = await asyncio.gather(*[agent.deliver(request(hop)) for _ in range(3)])
            assert all(r[0].outcome.value == "delivered" for r in again)
            assert agent.pool.reused == 3
            await agent.close()
            assert agent.pool.idle_count() == 0
            assert len(peer.messages) == 13

    run(main())


def test_connect_timeout_and_refusal_are_temporary() -> None:
    agent = SmtpAgent("client.test", None, timeouts=ClientTimeouts(connect=1))
    results = run(deliver(agent, request(smtp_hop("127.0.0.1", 1))))  # nothing on port 1
    assert summary(results) == [("deferred", 451, "4.4.1")]
    assert "connect to 127.0.0.1 [127.0.0.1]:1" in results[0].reply.text


def test_reply_helpers() -> None:
    assert with_status(Reply.of(550, None, "x")).status == "5.0.0"
    assert with_status(Reply.of(250, "2.1.5", "x")).status == "2.1.5"
    soft = as_transient(Reply.of(554, "5.7.1", "no"))
    assert (soft.code, soft.status, soft.text) == (454, "4.7.1", "no")
    assert as_transient(Reply.of(421, "4.3.2", "busy")).code == 421


class ScriptedPeer:
    """A raw loopback server answering each command line from a table (first word -> bytes)."""

    def __init__(self, greeting: bytes, answers: dict[str, bytes]) -> None:
        self.greeting = greeting
        self.answers = answers
        self.received = bytearray()
        self.port = 0

    async def __aenter__(self) -> ScriptedPeer:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.greeting)
        while line := await reader.readline():
            self.received += line
            verb = line.split()[0].decode().upper() if line.strip() else ""
            answer = self.answers.get(verb, b"250 ok\r\n")
            if answer == b"close":
                break
            writer.write(answer)
            await writer.drain()
        writer.close()


EHLO = b"250-peer.test\r\n250 PIPELINING\r\n"


@pytest.mark.parametrize(
    ("answers", "status", "text"),
    [
        ({"DATA": b"250 sure\r\n"}, "4.5.0", "unexpected reply to DATA"),
        ({"MAIL": b"250 ok\r\n250 ok\r\nbogus\r\n"}, "4.5.0", "malformed reply"),
        ({"RCPT": b"close"}, "4.4.2", "Lost connection"),
    ],
)
def test_protocol_errors_defer(answers: dict[str, bytes], status: str, text: str) -> None:
    async def main() -> None:
        async with ScriptedPeer(b"220 peer.test\r\n", {"EHLO": EHLO, **answers}) as peer:
            agent = SmtpAgent("client.test", None)
            results = await deliver(agent, request(smtp_hop("127.0.0.1", peer.port), "b@y", "c@y"))
            assert [r.outcome.value for r in results] == ["deferred", "deferred"]
            assert results[0].reply.status == status
            assert text in results[0].reply.text, results[0].reply

    run(main())


def test_plaintext_injected_after_starttls_is_refused() -> None:
    answers = {
        "EHLO": b"250-peer.test\r\n250 STARTTLS\r\n",
        "STARTTLS": b"220 go ahead\r\n250 injected\r\n",
    }

    async def main() -> None:
        async with ScriptedPeer(b"220 peer.test\r\n", answers) as peer:
            agent = SmtpAgent("client.test", None)
            results = await deliver(agent, request(smtp_hop("127.0.0.1", peer.port)))
            assert [r.outcome.value for r in results] == ["deferred"]
            assert "STARTTLS" in results[0].reply.text
            assert b"MAIL" not in peer.received

    run(main())


class WatchedCommit(asyncio.Future[bool]):
    """An early start's commit that says when the agent has begun to wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited = asyncio.Event()

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        self.awaited.set()
        super().add_done_callback(fn, context=context)


@pytest.mark.parametrize("chunking", [True, False])
@pytest.mark.parametrize("queued", [True, False])
def test_an_early_start_sends_the_envelope_then_waits_for_the_commit(
    queued: bool, chunking: bool
) -> None:
    envelope_seen = asyncio.Event()  # the last command before the content: RCPT or DATA

    def decide(event: ev.Event) -> None:
        if isinstance(event, ev.DataStart if not chunking else ev.RcptTo):
            envelope_seen.set()

    settings = ServerSettings(hostname="mx.test", chunking=chunking)

    async def main() -> None:
        async with SmtpPeer(settings, decide=decide) as peer:
            agent = SmtpAgent("client.test", None)
            req = request(smtp_hop("127.0.0.1", peer.port))
            committed = req.committed = WatchedCommit()
            delivering = asyncio.create_task(agent.deliver(req))
            await asyncio.wait_for(committed.awaited.wait(), 30)
            await asyncio.wait_for(envelope_seen.wait(), 30)
            (conn,) = peer.connections
            assert b"BDAT" not in conn.raw and b"Subject: test" not in conn.raw
            assert peer.messages == []
            committed.set_result(queued)
            results = await delivering
            if queued:
                assert summary(results) == [("delivered", 250, "2.0.0")]
                (message,) = peer.messages
                assert b"Subject: test" in message.content
                assert agent.pool.idle_count() == 1
            else:  # the connection is dropped mid-DATA: the peer discards the transaction
                assert summary(results) == [("deferred", 451, "4.3.0")]
                assert "not queued" in results[0].reply.text
                assert agent.pool.idle_count() == 0
                again = await deliver(agent, request(smtp_hop("127.0.0.1", peer.port)))
                assert summary(again) == [("delivered", 250, "2.0.0")]
                assert len(peer.messages) == 1
                assert b"Subject: test" not in peer.connections[0].raw
            await agent.close()

    run(main())


# ---- TLS reports (RFC 8460): the peer's EHLO name and the failure's reason ------------------


def failures(recorder: TlsRecorder) -> list[tuple[str, str, str, str]]:
    """(result type, receiving-mx-helo, failure-reason-code, receiving MX) of each failure."""
    return sorted(
        (t.result.value, t.receiving_helo, t.reason, t.receiving_mx)
        for t in recorder.take()
        if t.result is not Result.SUCCESS
    )


def mx_world(port: int) -> tuple[StaticResolver, NextHop]:
    resolver = StaticResolver(mx={"y.test": [MailHost("mx.y.test", "127.0.0.1")]})
    return resolver, smtp_hop("y.test", port, mx=True)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (  # no STARTTLS in the EHLO reply: the mail would go in plaintext
            {"EHLO": b"250-Peer.Example.\r\n250 PIPELINING\r\n"},
            ("starttls-not-supported", "peer.example", "STARTTLS not offered"),
        ),
        (  # offered, then refused: plaintext too, the refusal is the reason
            {
                "EHLO": b"250-peer.example greets you\r\n250 STARTTLS\r\n",
                "STARTTLS": b"454 4.7.0 TLS not available\r\n",
            },
            ("validation-failure", "peer.example", "454 4.7.0 TLS not available"),
        ),
    ],
)
def test_a_session_without_tls_is_reported_with_the_peers_name_and_why(
    answers: dict[str, bytes], expected: tuple[str, str, str]
) -> None:
    recorder = TlsRecorder()

    # the session is counted once it is set up; what MAIL gets does not matter
    script = {**answers, "MAIL": b"451 4.3.0 not today\r\n"}

    async def main() -> None:
        async with ScriptedPeer(b"220 peer.example ESMTP\r\n", script) as peer:
            resolver, hop = mx_world(peer.port)
            agent = SmtpAgent("client.test", resolver, tls_reports=recorder)
            results = await deliver(agent, request(hop))
            assert summary(results) == [("deferred", 451, "4.3.0")]
            assert b"MAIL FROM" in peer.received

    run(main())
    assert failures(recorder) == [(*expected, "mx.y.test")]


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        (False, ("certificate-not-trusted", "self-signed certificate")),
        (
            True,  # trusted, but for other names than mx.y.test
            (
                "certificate-host-mismatch",
                "Hostname mismatch, certificate is not valid for 'mx.y.test'.",
            ),
        ),
    ],
)
def test_a_certificate_that_does_not_verify_is_reported_with_openssls_words(
    tmp_path: Path, trusted: bool, expected: tuple[str, str]
) -> None:
    cert, key = certificate(tmp_path / "tls", *(() if trusted else ("mx.y.test",)))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    verify = ssl.create_default_context(cafile=str(cert)) if trusted else None
    recorder = TlsRecorder()

    async def main() -> None:
        async with SmtpPeer(tls=server) as peer:
            resolver, hop = mx_world(peer.port)
            agent = SmtpAgent(
                "client.test",
                resolver,
                tls=TlsPolicy(verify=True),
                verify_context=verify,
                tls_reports=recorder,
            )
            results = await deliver(agent, request(hop))
            assert summary(results) == [("deferred", 451, "4.7.5")]
            assert peer.starttls_seen == 1 and peer.messages == []

    run(main())
    assert failures(recorder) == [(expected[0], "mx.test", expected[1], "mx.y.test")]


def test_a_broken_handshake_then_plaintext_is_reported_with_openssls_reason(
    tmp_path: Path,
) -> None:
    cert, key = certificate(tmp_path / "tls", "mx.y.test")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    recorder = TlsRecorder()

    async def main() -> list[tuple[str, str, str, str]]:
        async with SmtpPeer(tls=server, broken_tls=True) as peer:  # garbage after the 220
            resolver, hop = mx_world(peer.port)
            agent = SmtpAgent("client.test", resolver, tls_reports=recorder)
            results = await deliver(agent, request(hop))  # again in plaintext (RFC 7435)
            assert [r.outcome.value for r in results] == ["delivered"]
            first = failures(recorder)
            results = await deliver(agent, request(hop))  # a new session, no STARTTLS now
            assert [r.outcome.value for r in results] == ["delivered"]
            assert peer.starttls_seen == 1 and len(peer.messages) == 2
        return first

    [first] = run(main())
    assert first[0:2] == ("validation-failure", "mx.test")
    assert first[2] and first[2].isupper() and " " not in first[2], first  # OpenSSL's reason
    # the session that skipped STARTTLS for that failure reports the failure's own reason
    assert failures(recorder) == [("validation-failure", "mx.test", first[2], "mx.y.test")]
