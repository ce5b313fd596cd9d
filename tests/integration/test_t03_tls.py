"""STARTTLS in the SMTP agent against a real TLS peer on loopback (Mailwright's server core
with a self-signed certificate): opportunistic use, plaintext retry after a broken handshake,
required and verified TLS per destination, and the exact bytes the client put on the wire."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailwright.core.delivery import DeliveryResult
from mailwright.delivery.session import TlsPolicy
from mailwright.delivery.smtp import SmtpAgent
from mailwright.routing.nexthop import NextHop
from mailwright.smtp.server import ServerSettings
from tests.support.delivery_request import MESSAGE, request, smtp_hop
from tests.support.smtp_peer import SmtpPeer, make_certificate

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


async def send(agent: SmtpAgent, peer: SmtpPeer, times: int = 1, **kw: Any) -> list[DeliveryResult]:
    results = []
    try:
        for _ in range(times):
            results += await agent.deliver(request(smtp_hop("127.0.0.1", peer.port), **kw))
    finally:
        await agent.close()
    return results


def test_opportunistic_starttls_without_certificate_checks(server_context) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            results = await send(SmtpAgent("client.test", None), peer)
            assert [r.outcome.value for r in results] == ["delivered"]
            details = results[0].details
            assert details["tls"] == "TLSv1.3" and details["tls_cipher"]
            assert details["tls_verified"] == "no"
            assert peer.messages[0].tls and peer.starttls_seen == 1
            assert peer.messages[0].content == MESSAGE

    run(main())


def test_broken_handshake_retried_in_plaintext_once_and_remembered(server_context) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context, broken_tls=True) as peer:
            agent = SmtpAgent("client.test", None, idle_timeout=0)  # no reuse: new sessions
            results = await send(agent, peer, times=2)
            assert [r.outcome.value for r in results] == ["delivered", "delivered"]
            assert "tls" not in results[0].details
            assert peer.starttls_seen == 1  # the second session did not try again
            assert len(peer.connections) == 3  # broken TLS, plaintext, plaintext
            assert [m.tls for m in peer.messages] == [False, False]

    run(main())


def test_required_tls_not_offered_defers_with_4_7_5() -> None:
    async def main() -> None:
        async with SmtpPeer() as peer:
            agent = SmtpAgent("client.test", None, tls=TlsPolicy(require=True))
            results = await send(agent, peer)
            assert [r.outcome.value for r in results] == ["deferred"]
            reply = results[0].reply
            assert (reply.code, reply.status) == (451, "4.7.5")
            assert "does not offer STARTTLS" in reply.text
            assert peer.messages == []

    run(main())


def test_required_tls_with_a_broken_handshake_is_not_sent_in_plaintext(server_context) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context, broken_tls=True) as peer:
            agent = SmtpAgent("client.test", None, tls=TlsPolicy(require=True))
            results = await send(agent, peer)
            assert [r.outcome.value for r in results] == ["deferred"]
            assert results[0].reply.status == "4.7.5"
            assert "handshake" in results[0].reply.text
            assert len(peer.connections) == 1 and peer.messages == []

    run(main())


def test_verified_tls(server_context, trusting) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            policy = TlsPolicy(verify=True)
            agent = SmtpAgent("client.test", None, tls=policy, verify_context=trusting)
            results = await send(agent, peer)
            assert [r.outcome.value for r in results] == ["delivered"]
            assert results[0].details["tls_verified"] == "yes"

    run(main())


def test_certificate_that_does_not_verify_defers(server_context) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            agent = SmtpAgent("client.test", None, tls=TlsPolicy(verify=True))  # system CAs
            results = await send(agent, peer)
            assert [r.outcome.value for r in results] == ["deferred"]
            reply = results[0].reply
            assert reply.status == "4.7.5" and "did not verify" in reply.text
            assert peer.messages == []

    run(main())


def test_policy_per_destination() -> None:
    async def main() -> None:
        async with SmtpPeer() as lax, SmtpPeer() as strict:

            def policy(hop: NextHop) -> TlsPolicy:
                return TlsPolicy(require=hop.port == strict.port)

            agent = SmtpAgent("client.test", None, tls=policy)
            a = await agent.deliver(request(smtp_hop("127.0.0.1", lax.port)))
            b = await agent.deliver(request(smtp_hop("127.0.0.1", strict.port)))
            await agent.close()
            assert (a[0].outcome.value, b[0].outcome.value) == ("delivered", "deferred")

    run(main())


BARE = b"Subject: bare\r\n\r\nline one\nline two\rline three\r\n.dot\n\r\n..\nend"


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_no_bare_line_end_ever_goes_on_the_wire(server_context, chunking: bool, tls: bool) -> None:
    async def main() -> None:
        settings = ServerSettings(hostname="mx.test", chunking=chunking)
        async with SmtpPeer(settings, tls=server_context if tls else None) as peer:
            results = await send(SmtpAgent("client.test", None), peer, message=BARE, chunk=2)
            assert [r.outcome.value for r in results] == ["delivered"], results[0].reply
            wire = bytes(peer.connections[0].raw)
            assert wire.count(b"\n") == wire.count(b"\r\n")
            assert wire.count(b"\r") == wire.count(b"\r\n")
            expected = b"Subject: bare\r\n\r\nline one\r\nline two\r\nline three\r\n.dot\r\n"
            expected += b"\r\n..\r\nend\r\n"
            assert peer.messages[0].content == expected
            assert peer.messages[0].tls is tls

    run(main())
