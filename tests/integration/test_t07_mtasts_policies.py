"""MTA-STS policy discovery against real peers: TXT records from dnsmasq, policy files from
an HTTPS server on loopback (certificates from a test CA), the in-memory cache by id and
max_age, and every way a fetch can fail (no policy, or the cached one)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.routing.mtasts import MtaStsPolicies, StsMode, StsPolicyStore
from mailwright.routing.mx import DnsResolver
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.https import PolicyServer
from tests.support.peers import peer

pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.b.test\r\nmax_age: 600\r\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dns_for(root: Path, record: str = "v=STSv1; id=1;") -> DnsServer:
    dns = DnsServer(root / "dns")
    dns.zone("b.test", "c.test").host("mta-sts.b.test", "127.0.0.1")
    if record:
        dns.txt("_mta-sts.b.test", record)
    return dns


@pytest.fixture
def https(tmp_path: Path) -> Iterator[PolicyServer]:
    with PolicyServer(tmp_path, "mta-sts.b.test").publish("mta-sts.b.test", POLICY) as server:
        yield server


def policies(
    dns: DnsServer,
    https: PolicyServer,
    clock: Clock,
    port: int = 0,
    store: StsPolicyStore | None = None,
) -> MtaStsPolicies:
    resolver = DnsResolver([dns.address], dns.port, timeout=2, lifetime=3, cache_size=0)
    context = ssl.create_default_context(cafile=str(https.cert))
    port = port or https.port
    return MtaStsPolicies(
        resolver, context, port=port, timeout=5, clock=clock, store=store, wall_clock=clock
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_policy_fetched_once_and_cached_until_max_age(tmp_path: Path, https: PolicyServer) -> None:
    clock = Clock()
    with dns_for(tmp_path) as dns:
        sts = policies(dns, https, clock)
        policy = asyncio.run(sts.policy("b.test"))
        assert policy is not None and policy.mode is StsMode.ENFORCE
        assert policy.mx == ("mx.b.test",) and policy.max_age == 600
        assert https.requests == [("mta-sts.b.test", "/.well-known/mta-sts.txt")]
        assert asyncio.run(sts.policy("B.test.")) == policy
        assert len(https.requests) == 1  # same id: the cached policy
        clock.now += 601
        assert asyncio.run(sts.policy("b.test")) == policy
        assert len(https.requests) == 2  # expired: fetched again


def test_new_id_fetches_again(tmp_path: Path, https: PolicyServer) -> None:
    clock = Clock()
    with dns_for(tmp_path) as dns:
        sts = policies(dns, https, clock)
        assert asyncio.run(sts.policy("b.test")) is not None
    https.publish("mta-sts.b.test", POLICY.replace("enforce", "testing"))
    with dns_for(tmp_path, "v=STSv1; id=2;") as dns:
        sts.resolver = policies(dns, https, clock).resolver
        policy = asyncio.run(sts.policy("b.test"))
        assert policy is not None and policy.mode is StsMode.TESTING
        assert len(https.requests) == 2


def test_concurrent_lookups_share_one_fetch(tmp_path: Path, https: PolicyServer) -> None:
    async def many(sts: MtaStsPolicies) -> list[object]:
        return await asyncio.gather(*(sts.policy("b.test") for _ in range(5)))

    with dns_for(tmp_path) as dns:
        results = asyncio.run(many(policies(dns, https, Clock())))
    assert all(r is not None and r == results[0] for r in results)
    assert len(https.requests) == 1


def test_no_record_no_policy(tmp_path: Path, https: PolicyServer) -> None:
    with dns_for(tmp_path, record="") as dns:
        sts = policies(dns, https, Clock())
        assert asyncio.run(sts.policy("b.test")) is None
        assert asyncio.run(sts.policy("c.test")) is None  # NXDOMAIN
        assert asyncio.run(sts.policy("unknown.test")) is None  # REFUSED by dnsmasq
    assert https.requests == []


@pytest.mark.parametrize(
    ("status", "content_type", "body", "problem"),
    [
        (301, "text/plain", POLICY,  # redirects are not followed
         ("sts-policy-fetch-error", "HTTP status 301 (redirects are not followed)")),
        (404, "text/plain", POLICY,
         ("sts-policy-fetch-error", "HTTP status 404 (redirects are not followed)")),
        (200, "text/html", POLICY,
         ("sts-policy-invalid", "Content-Type is text/html, not text/plain")),
        (200, "text/plain", POLICY.replace("STSv1", "STSv2"),
         ("sts-policy-invalid", "policy version is 'STSv2', not 'STSv1'")),
        (200, "text/plain", POLICY + "x" * 70000,
         ("sts-policy-invalid", "policy size '70060' is not a number up to 65536")),
    ],
)  # fmt: skip
def test_bad_answers_are_no_policy(
    tmp_path: Path,
    https: PolicyServer,
    status: int,
    content_type: str,
    body: str,
    problem: tuple[str, str],
) -> None:
    https.publish("mta-sts.b.test", body, status, content_type)
    with dns_for(tmp_path) as dns:
        sts = policies(dns, https, Clock())
        assert asyncio.run(sts.policy("b.test")) is None
    assert len(https.requests) == 1
    assert sts.problem("b.test") == problem  # for TLS reports: result type and reason


def test_certificate_for_another_name_is_no_policy(tmp_path: Path) -> None:
    with PolicyServer(tmp_path, "www.b.test") as https:  # not mta-sts.b.test
        https.publish("mta-sts.b.test", POLICY)
        with dns_for(tmp_path) as dns:
            sts = policies(dns, https, Clock())
            assert asyncio.run(sts.policy("b.test")) is None
        assert https.requests == []  # the handshake failed before any request
    reason = "Hostname mismatch, certificate is not valid for 'mta-sts.b.test'."
    assert sts.problem("b.test") == ("sts-webpki-invalid", reason)  # no address, no port


def test_server_down_keeps_the_cached_policy(tmp_path: Path, https: PolicyServer) -> None:
    clock = Clock()
    with dns_for(tmp_path) as dns:
        down = policies(dns, https, clock, port=free_port())
        assert asyncio.run(down.policy("b.test")) is None  # nothing cached: no policy
        sts = policies(dns, https, clock)
        cached = asyncio.run(sts.policy("b.test"))
        assert cached is not None
    with dns_for(tmp_path, "v=STSv1; id=2;") as dns:
        sts.resolver = policies(dns, https, clock).resolver
        sts.port = free_port()  # new id, but the server is gone
        assert asyncio.run(sts.policy("b.test")) == cached
    with dns_for(tmp_path, record="") as dns:
        sts.resolver = policies(dns, https, clock).resolver  # the record is gone
        assert asyncio.run(sts.policy("b.test")) == cached
        clock.now += 601
        assert asyncio.run(sts.policy("b.test")) is None  # ... and the policy expired


def test_a_stored_policy_outlives_the_process(tmp_path: Path, https: PolicyServer) -> None:
    """A new process (a restart) with the same store has the policy without fetching it,
    the record and the policy server gone; once it expired, there is none."""
    from mailwright.routing.mtasts_store import SqlitePolicyStore

    clock, store = Clock(), SqlitePolicyStore(tmp_path / "queue" / "mta-sts.db")
    with dns_for(tmp_path) as dns:
        policy = asyncio.run(policies(dns, https, clock, store=store).policy("b.test"))
        assert policy is not None and policy.mode is StsMode.ENFORCE
    with dns_for(tmp_path, record="") as dns:
        again = policies(dns, https, clock, port=free_port(), store=store)
        assert asyncio.run(again.policy("b.test")) == policy
        clock.now += 601
        later = policies(dns, https, clock, port=free_port(), store=store)
        assert asyncio.run(later.policy("b.test")) is None
    assert len(https.requests) == 1


def test_nodes_share_policies_in_postgresql(
    tmp_path: Path, https: PolicyServer, postgres_database: str
) -> None:
    """Node B uses the policy node A fetched (same id) without fetching it, even with the
    policy server unreachable from B; a new id is fetched again by whoever needs it."""
    from mailwright.routing.mtasts_store import PostgresPolicyStore
    from tests.support.postgres import state_database

    clock = Clock()
    node_a = PostgresPolicyStore(state_database(postgres_database))
    node_b = PostgresPolicyStore(state_database(postgres_database))
    with dns_for(tmp_path) as dns:
        policy = asyncio.run(policies(dns, https, clock, store=node_a).policy("b.test"))
        assert policy is not None
        b = policies(dns, https, clock, port=free_port(), store=node_b)
        assert asyncio.run(b.policy("b.test")) == policy
    assert len(https.requests) == 1
    with dns_for(tmp_path, "v=STSv1; id=2;") as dns:
        https.publish("mta-sts.b.test", POLICY.replace("mx.b.test", "mx2.b.test"))
        newer = asyncio.run(policies(dns, https, clock, store=node_b).policy("b.test"))
        assert newer is not None and newer.mx == ("mx2.b.test",)
        a = policies(dns, https, clock, port=free_port(), store=node_a)
        assert asyncio.run(a.policy("b.test")) == newer
    assert len(https.requests) == 2
