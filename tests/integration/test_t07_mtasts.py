"""MTA-STS between two real daemons: A relays to B (mx.b.test, found through dnsmasq) while
b.test publishes a TXT record and a policy file on a loopback HTTPS server. Enforced
policies deliver only over verified TLS to listed MX hosts (else 4.7.5, deferred); testing
mode delivers and logs; no record, or a policy server that is down, changes nothing; an
explicit tls_policy entry wins; a message with ``TLS-Required: No`` (RFC 8689) goes despite
an enforced policy, and the next one without it does not get its session."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.test_t07_outbound_tls import submit
from tests.support.daemon import Mailwright, running
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.https import PolicyServer
from tests.support.peers import peer
from tests.support.security import certificate

pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")


def policy(mode: str = "enforce", mx: str = "mx.b.test") -> str:
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"


@contextmanager
def receiver(root: Path, cert_name: str = "mx.b.test") -> Iterator[Mailwright]:
    cert, key = certificate(root / "b-tls", cert_name)
    config = {
        "hostname": "mx.b.test",
        "tls": {"certificate": str(cert), "key": str(key)},
        "routing": {"local_domains": ["b.test"]},
    }
    with running(root / "b", config) as mw:
        mw.cert = cert  # type: ignore[attr-defined]
        yield mw


@contextmanager
def world(root: Path, record: bool = True) -> Iterator[tuple[DnsServer, PolicyServer]]:
    dns = DnsServer(root / "dns")
    dns.mx("b.test", "mx.b.test").host("mx.b.test", "127.0.0.1")
    dns.host("mta-sts.b.test", "127.0.0.1")
    if record:
        dns.txt("_mta-sts.b.test", "v=STSv1; id=20260101;")
    with dns, PolicyServer(root, "mta-sts.b.test") as https:
        yield dns, https


def sender(
    root: Path, dns: DnsServer, https: PolicyServer, b: Mailwright, **delivery: Any
) -> dict[str, Any]:
    cas = root / "cas.pem"
    cas.write_bytes(https.cert.read_bytes() + b.cert.read_bytes())  # type: ignore[attr-defined]
    return {
        "hostname": "a.test",
        "dns": dns.settings(),
        "delivery": {
            "mode": "background",
            "smtp_port": b.port,
            "mta_sts_port": https.port,
            "tls_ca_file": str(cas),
            "idle_connection_timeout": 0.5,
            **delivery,
        },
        "queue": {"host_status_timeout": 0},
    }


def deliver(root: Path, config: dict[str, Any]) -> tuple[Mailwright, str]:
    with running(root / "a", config) as a:
        qid = submit(a)
        return a, a.wait_log(f"{qid}: to=<user@b.test>")


def test_enforce_with_good_tls_delivers(tmp_path: Path) -> None:
    with world(tmp_path) as (dns, https), receiver(tmp_path) as b:
        https.publish("mta-sts.b.test", policy())
        a, line = deliver(tmp_path, sender(tmp_path, dns, https, b))
        assert "stat=Sent" in line, line
        assert b.wait_log("proto=ESMTPS")
        assert https.requests == [("mta-sts.b.test", "/.well-known/mta-sts.txt")]
    assert any("MTA-STS: b.test: policy id 20260101, mode enforce" in x for x in a.log)


def test_enforce_mx_not_in_policy_defers(tmp_path: Path) -> None:
    with world(tmp_path) as (dns, https), receiver(tmp_path) as b:
        https.publish("mta-sts.b.test", policy(mx="*.elsewhere.test"))
        _, line = deliver(tmp_path, sender(tmp_path, dns, https, b))
        assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
        assert "MTA-STS policy of b.test: no MX host matches the policy" in line
    assert not any("proto=ESMTP" in x for x in b.log)


def test_enforce_certificate_for_another_name_defers(tmp_path: Path) -> None:
    with world(tmp_path) as (dns, https), receiver(tmp_path, "wrong.b.test") as b:
        https.publish("mta-sts.b.test", policy())
        _, line = deliver(tmp_path, sender(tmp_path, dns, https, b))
        assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
        assert "MTA-STS policy of b.test: TLS certificate of mx.b.test" in line
        assert "did not verify" in line
    assert not any("proto=ESMTP" in x for x in b.log)


def test_explicit_tls_policy_wins(tmp_path: Path) -> None:
    with world(tmp_path) as (dns, https), receiver(tmp_path, "wrong.b.test") as b:
        https.publish("mta-sts.b.test", policy())
        config = sender(tmp_path, dns, https, b, tls_policy={"b.test": "encrypt"})
        _, line = deliver(tmp_path, config)
        assert "stat=Sent" in line, line
        assert https.requests == []


def test_testing_mode_delivers_and_logs(tmp_path: Path) -> None:
    with world(tmp_path) as (dns, https), receiver(tmp_path, "wrong.b.test") as b:
        https.publish("mta-sts.b.test", policy("testing", "mx.b.test\r\nmx: *.c.test"))
        a, line = deliver(tmp_path, sender(tmp_path, dns, https, b))
        assert "stat=Sent" in line, line
    warning = next(x for x in a.log if "testing mode: delivering anyway" in x)
    assert "MTA-STS policy of b.test: TLS certificate of mx.b.test" in warning


def test_no_record_delivers_as_before(tmp_path: Path) -> None:
    with world(tmp_path, record=False) as (dns, https), receiver(tmp_path) as b:
        https.publish("mta-sts.b.test", policy(mx="*.elsewhere.test"))
        _, line = deliver(tmp_path, sender(tmp_path, dns, https, b))
        assert "stat=Sent" in line, line
        assert https.requests == []
        assert "_mta-sts.b.test" in dns.log()


def test_policy_server_down_delivers_as_before(tmp_path: Path) -> None:
    with world(tmp_path) as (dns, https), receiver(tmp_path) as b:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = int(s.getsockname()[1])
        config = sender(tmp_path, dns, https, b, mta_sts_port=closed)
        a, line = deliver(tmp_path, config)
        assert "stat=Sent" in line, line
    assert any("MTA-STS: b.test: cannot fetch the policy" in x for x in a.log)


def test_enforced_policy_survives_a_restart(tmp_path: Path) -> None:
    """RFC 8461 5.1: a policy is kept for its max_age, restarts included: after one, with
    the policy server gone, the enforced policy still refuses a certificate that does not
    verify (a memory-only cache would deliver in plain opportunistic TLS)."""
    with world(tmp_path) as (dns, https):
        with receiver(tmp_path) as b:
            https.publish("mta-sts.b.test", policy())
            _, line = deliver(tmp_path, sender(tmp_path, dns, https, b))
            assert "stat=Sent" in line, line
        assert (tmp_path / "a" / "queue" / "mta-sts.db").exists()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = int(s.getsockname()[1])
        with receiver(tmp_path / "again", "wrong.b.test") as b:
            config = sender(tmp_path, dns, https, b, mta_sts_port=closed)
            _, line = deliver(tmp_path, config)
            assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
            assert "MTA-STS policy of b.test: TLS certificate of mx.b.test" in line
        assert https.requests == [("mta-sts.b.test", "/.well-known/mta-sts.txt")]
    assert not any("proto=ESMTP" in x for x in b.log)


NOT_REQUIRED = (
    b"From: a@x.test\r\nTo: user@b.test\r\nSubject: a TLS report, say\r\n"
    b"TLS-Required: No\r\n\r\nbody\r\n"
)


def test_tls_required_no_goes_despite_an_enforced_policy(tmp_path: Path) -> None:
    # RFC 8689 5 (and RFC 8460 5.3: a TLS report must get through the failures it reports)
    with world(tmp_path) as (dns, https), receiver(tmp_path, "wrong.b.test") as b:
        https.publish("mta-sts.b.test", policy())
        config = sender(tmp_path, dns, https, b, idle_connection_timeout=30)
        with running(tmp_path / "a", config) as a:
            qid = submit(a, message=NOT_REQUIRED)
            line = a.wait_log(f"{qid}: to=<user@b.test>")
            assert "stat=Sent" in line, line
            assert a.wait_log(f"{qid}: TLS-Required: No: no DANE or MTA-STS for")
            assert https.requests == []  # the policy was not even asked for
            # the next message, without the field: the policy holds, and the session the
            # first one left open (opportunistic TLS, a certificate for another name) is
            # not reused for it
            qid = submit(a)
            line = a.wait_log(f"{qid}: to=<user@b.test>")
            assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
            assert "MTA-STS policy of b.test: TLS certificate of mx.b.test" in line
    assert sum("proto=ESMTPS" in x for x in b.log) == 1


def test_tls_required_no_ignored_when_switched_off(tmp_path: Path) -> None:
    with world(tmp_path) as (dns, https), receiver(tmp_path, "wrong.b.test") as b:
        https.publish("mta-sts.b.test", policy())
        config = sender(tmp_path, dns, https, b, tls_required_no=False)
        with running(tmp_path / "a", config) as a:
            qid = submit(a, message=NOT_REQUIRED)
            line = a.wait_log(f"{qid}: to=<user@b.test>")
        assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
    assert not any("proto=ESMTP" in x for x in b.log)
