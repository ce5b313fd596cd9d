"""REQUIRETLS (RFC 8689 4.2.1) in the SMTP agent, against real TLS peers on loopback: a
message sent with it goes only to an MX host found through DNSSEC or listed by MTA-STS,
only over TLS that verifies for that host, only to a peer that offers REQUIRETLS (passed
on in MAIL), never on a pooled session; LMTP (final delivery) is not bound by it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from mailwright.core.delivery import DeliveryResult
from mailwright.core.envelope import MailParams
from mailwright.delivery.dane import DaneHost
from mailwright.delivery.lmtp import LmtpAgent
from mailwright.delivery.session import Endpoint
from mailwright.delivery.smtp import SmtpAgent
from mailwright.routing.mtasts import StsMode, StsPolicy
from mailwright.routing.nexthop import NextHop
from mailwright.routing.resolver import MailHost
from mailwright.smtp.server import ServerSettings
from tests.integration.test_t03_tls import certificate, server_context, trusting
from tests.support.daemon import free_port
from tests.support.delivery_request import request, smtp_hop
from tests.support.smtp_peer import SmtpPeer
from tests.support.static_resolver import StaticResolver

T = TypeVar("T")
__all__ = ["certificate", "server_context", "trusting"]  # the TLS fixtures, shared
STRICT = MailParams(requiretls=True)
TLS_REQUIRED_NO = b"From: a@x.test\r\nTLS-Required: No\r\nSubject: t\r\n\r\nbody\r\n"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def resolver(secure: bool, name: str = "mx.test") -> StaticResolver:
    return StaticResolver(
        mx={"y.test": [MailHost(name, "127.0.0.1", secure=secure)]},
        hosts={"relay.test": [MailHost("mx.test", "127.0.0.1")]},
    )


def summary(results: list[DeliveryResult]) -> list[tuple[str, int, str | None]]:
    return [(r.outcome.value, r.reply.code, r.reply.status) for r in results]


async def send(agent: SmtpAgent, hop: NextHop, times: int = 1, **kw: Any) -> list[DeliveryResult]:
    results = []
    try:
        for _ in range(times):
            results += await agent.deliver(request(hop, params=STRICT, **kw))
    finally:
        await agent.close()
    return results


def test_verified_tls_to_a_dnssec_mx_that_offers_it(server_context, trusting) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            agent = SmtpAgent("client.test", resolver(secure=True), verify_context=trusting)
            results = await send(agent, smtp_hop("y.test", peer.port, mx=True), times=2)
            assert summary(results) == [("delivered", 250, "2.0.0")] * 2
            assert results[0].details["tls_verified"] == "yes"
            assert [m.tls for m in peer.messages] == [True, True]
            assert all("REQUIRETLS" in m.mail_params for m in peer.messages)
            assert len(peer.connections) == 2  # never a pooled session

    run(main())


def test_a_session_pooled_by_other_mail_is_not_taken(server_context, trusting) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            agent = SmtpAgent("client.test", resolver(secure=True), verify_context=trusting)
            hop = smtp_hop("y.test", peer.port, mx=True)
            plain = await agent.deliver(request(hop))  # opportunistic TLS, then pooled
            results = await send(agent, hop)
            assert [r.outcome.value for r in plain + results] == ["delivered", "delivered"]
            assert len(peer.connections) == 2
            assert results[0].details["tls_verified"] == "yes"

    run(main())


def test_an_mx_without_dnssec_or_mta_sts_is_never_tried(server_context, trusting) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            agent = SmtpAgent("client.test", resolver(secure=False), verify_context=trusting)
            hop = smtp_hop("y.test", peer.port, mx=True)
            results = await send(agent, hop, message=TLS_REQUIRED_NO)  # the field is ignored
            assert summary(results) == [("deferred", 451, "4.7.30")]  # the lifetime bounces
            assert "validated by DNSSEC or an MTA-STS policy" in results[0].reply.text
            assert peer.connections == []

    run(main())


@pytest.mark.parametrize(
    ("mode", "listed", "expected"),
    [
        (StsMode.ENFORCE, "mx.test", "delivered"),
        (StsMode.TESTING, "*.test", "delivered"),
        (StsMode.TESTING, "mx.other.test", "deferred"),
    ],
)
def test_an_mta_sts_policy_validates_the_mx_host(
    server_context, trusting, mode: StsMode, listed: str, expected: str
) -> None:
    async def policy(hop: NextHop) -> StsPolicy:
        return StsPolicy(mode, (listed,), 86400)

    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            agent = SmtpAgent(
                "client.test", resolver(secure=False), verify_context=trusting, mta_sts=policy
            )
            hop = smtp_hop("y.test", peer.port, mx=True)
            # TLS-Required: No is ignored (RFC 8689 4.1): else no policy would be looked up
            results = await send(agent, hop, message=TLS_REQUIRED_NO)
            assert [r.outcome.value for r in results] == [expected]
            assert len(peer.messages) == (expected == "delivered")

    run(main())


def test_a_backup_mx_without_it_does_not_bounce_what_the_primary_deferred(
    server_context, trusting
) -> None:
    async def main() -> None:
        port = free_port()  # the primary, 127.0.0.2: nobody listens there
        hosts = [
            MailHost("mx.test", "127.0.0.2", 10, True),
            MailHost("mx.test", "127.0.0.1", 20, True),
        ]
        dns = StaticResolver(mx={"y.test": hosts})
        settings = ServerSettings(hostname="mx.test", requiretls=False)
        async with SmtpPeer(settings, tls=server_context, port=port) as backup:
            agent = SmtpAgent("client.test", dns, verify_context=trusting)
            results = await send(agent, smtp_hop("y.test", port, mx=True))
            assert [r.outcome.value for r in results] == ["deferred"]
            assert results[0].remote_mta == "mx.test [127.0.0.2]"  # the primary's reason
            assert len(backup.connections) == 1 and backup.messages == []

    run(main())


def test_a_report_passes_the_tag_on_without_being_bound_by_it(server_context) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            agent = SmtpAgent("client.test", resolver(secure=False))  # nothing validates
            results = await send(agent, smtp_hop("y.test", peer.port, mx=True), sender="")
            assert [r.outcome.value for r in results] == ["delivered"]
            assert peer.messages[0].tls and "REQUIRETLS" in peer.messages[0].mail_params

    run(main())


def test_a_peer_that_does_not_offer_it_gets_nothing(server_context, trusting) -> None:
    async def main() -> None:
        settings = ServerSettings(hostname="mx.test", requiretls=False)
        async with SmtpPeer(settings, tls=server_context) as peer:
            agent = SmtpAgent("client.test", resolver(secure=True), verify_context=trusting)
            results = await send(agent, smtp_hop("y.test", peer.port, mx=True))
            assert summary(results) == [("failed", 550, "5.7.30")]
            assert "does not offer REQUIRETLS" in results[0].reply.text
            assert peer.messages == []

    run(main())


def test_no_starttls_or_an_unverified_certificate_defers(server_context) -> None:
    async def main() -> None:
        async with SmtpPeer() as plain, SmtpPeer(tls=server_context) as untrusted:
            for peer in (plain, untrusted):  # the second: system CAs do not know it
                agent = SmtpAgent("client.test", resolver(secure=True))
                results = await send(agent, smtp_hop("y.test", peer.port, mx=True))
                assert summary(results) == [("deferred", results[0].reply.code, "4.7.5")]
                assert peer.messages == []

    run(main())


class UnusableTlsa:
    """A DANE gate's answer for a host whose TLSA records are all unusable (RFC 7672 2.2:
    DANE asks for TLS there, unauthenticated)."""

    async def hosts(self, hop: NextHop, endpoints: list[Endpoint]) -> dict[str, DaneHost]:
        return {e.name: DaneHost(e.name, ()) for e in endpoints}


def test_dane_without_usable_records_still_needs_a_verified_certificate(server_context) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            gate: Any = UnusableTlsa()
            agent = SmtpAgent("client.test", resolver(secure=True), dane=gate)  # system CAs
            results = await send(agent, smtp_hop("y.test", peer.port, mx=True))
            assert [(r.outcome.value, r.reply.status) for r in results] == [("deferred", "4.7.5")]
            assert peer.messages == []

    run(main())


def test_the_certificate_must_name_the_mx_host(server_context, trusting) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            strange = resolver(secure=True, name="other.test")  # the certificate names mx.test
            agent = SmtpAgent("client.test", strange, verify_context=trusting)
            results = await send(agent, smtp_hop("y.test", peer.port, mx=True))
            assert [r.outcome.value for r in results] == ["deferred"]
            assert peer.messages == []

    run(main())


def test_a_named_relay_needs_no_mx_validation(server_context, trusting) -> None:
    async def main() -> None:
        async with SmtpPeer(tls=server_context) as peer:
            agent = SmtpAgent("client.test", resolver(secure=False), verify_context=trusting)
            results = await send(agent, smtp_hop("relay.test", peer.port))
            assert summary(results) == [("delivered", 250, "2.0.0")]
            assert "REQUIRETLS" in peer.messages[0].mail_params

    run(main())


def test_lmtp_is_final_delivery_and_not_bound_by_it() -> None:
    async def main() -> None:
        async with SmtpPeer(ServerSettings(hostname="mx.test", lmtp=True)) as peer:
            agent = LmtpAgent("client.test", None)
            results = await send(agent, smtp_hop("127.0.0.1", peer.port))
            assert [r.outcome.value for r in results] == ["delivered"]
            assert peer.messages[0].tls is False

    run(main())
