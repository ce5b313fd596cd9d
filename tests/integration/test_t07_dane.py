"""DANE (RFC 7672) between real daemons, with real DNSSEC: daemon A relays to B, finding
B's MX host through Unbound, which validates the zone dane.test (signed here with
ldns-signzone, served by NSD, its key Unbound's trust anchor) and answers the unsigned
zone plain.test as insecure. A trusts Unbound's AD bit (``delivery.dane_nameservers``).

DANE-EE SPKI SHA-256 match: delivered over TLS, ``tls=dane-verified``; a mismatch and a
bogus TLSA record (its signature broken after signing: Unbound answers SERVFAIL) defer
with 4.7.5 and send nothing; DANE-TA: delivered when B presents the anchor's chain for its
MX name; a DANE host without STARTTLS (smtp-sink) defers; an insecure zone delivers with
opportunistic TLS as before; DANE wins over an MTA-STS policy that would refuse; a message
with ``TLS-Required: No`` (RFC 8689) goes despite a mismatch, with opportunistic TLS; an MX
host name that is a CNAME gets the TLSA records of the name it leads to (RFC 7672 2.2.2);
the tls_policy levels "dane" (DANE for one destination) and "dane-only" (a host without
validated records deferred)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.flags
import dns.rcode
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailwright.routing.dane import tlsa_text
from tests.integration.test_t07_outbound_tls import submit
from tests.support import dnssec, smtp_sink
from tests.support.daemon import Mailwright, running
from tests.support.dnssec import DnssecWorld
from tests.support.https import PolicyServer
from tests.support.peers import peer, require_peer
from tests.support.security import certificate

pytestmark = peer("nsd, unbound, ldns-signzone", dnssec.available(), dnssec.WHY)
ZONE = "dane.test"


def der(pem_path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(pem_path.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def ca_and_server(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``name`` it issued: (chain file, key, CA file)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)

    def build(subject: str, public: Any, ca: bool, sans: list[str]) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DANE test CA")]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            names = [x509.DNSName(s) for s in sans]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    ca = build("DANE test CA", ca_key.public_key(), True, [])
    leaf = build(name, key.public_key(), False, [name])
    pem = serialization.Encoding.PEM
    chain, key_file, ca_file = directory / "chain.pem", directory / "key.pem", directory / "ca.pem"
    chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    ca_file.write_bytes(ca.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, key_file, ca_file


@dataclass
class World:
    dns: DnssecWorld
    https: PolicyServer
    ee: tuple[Path, Path]  # certificate and key whose SPKI the TLSA records name
    ta: tuple[Path, Path]  # chain (server + CA) and key for mx.ta.dane.test


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dane")
    ee = certificate(root / "ee", "mx.ee.dane.test")
    stranger, _ = certificate(root / "stranger", "mx.bad.dane.test")
    chain, ta_key, ca = ca_and_server(root / "ta", "mx.ta.dane.test")
    good = tlsa_text(der(ee[0]), 3, 1, 1)
    zone = DnssecWorld(root / "dns")
    signed = zone.signed(ZONE)
    for label, tlsa in [
        ("ee", good),
        ("bad", tlsa_text(der(stranger), 3, 1, 1)),
        ("ta", tlsa_text(der(ca), 2, 0, 1)),
        ("nostarttls", good),
        ("bogus", good),
        ("sts", good),
    ]:
        signed.add(
            f"{label} IN MX 10 mx.{label}",
            f"mx.{label} IN A 127.0.0.1",
            f"_25._tcp.mx.{label} IN TLSA {tlsa}",
        )
    signed.add(
        '_mta-sts.sts IN TXT "v=STSv1; id=20260101;"',
        "mta-sts.sts IN A 127.0.0.1",
    )
    # MX host names that are aliases (RFC 7672 2.2.2): TLSA records only where they lead
    signed.add("alias-bad IN MX 10 mx.alias-bad", "mx.alias-bad IN CNAME mx.bad")
    signed.add("alias-ta IN MX 10 mx.alias-ta", "mx.alias-ta IN CNAME mx.ta")
    zone.tamper(ZONE, "_25._tcp.mx.bogus", "TLSA")
    zone.unsigned("plain.test").add("@ IN MX 10 mx", "mx IN A 127.0.0.1")
    zone.unsigned("only.test").add("@ IN MX 10 mx", "mx IN A 127.0.0.1")  # for dane-only
    with zone, PolicyServer(root, "mta-sts.sts.dane.test") as https:
        yield World(zone, https, ee, (chain, ta_key))


@contextmanager
def receiver(root: Path, domain: str, cert: tuple[Path, Path]) -> Iterator[Mailwright]:
    config = {
        "hostname": f"mx.{domain}",
        "tls": {"certificate": str(cert[0]), "key": str(cert[1])},
        "routing": {"local_domains": [domain]},
    }
    with running(root / "b", config) as mw:
        yield mw


def sender(world: World, port: int, **delivery: Any) -> dict[str, Any]:
    return {
        "hostname": "a.test",
        "dns": world.dns.settings(),
        "delivery": {
            "mode": "background",
            "smtp_port": port,
            "dane": "opportunistic",
            "dane_nameservers": [world.dns.address],
            "mta_sts_port": world.https.port,
            "tls_ca_file": str(world.https.cert),  # the policy server's; never B's
            "idle_connection_timeout": 0.5,
            **delivery,
        },
        "queue": {"host_status_timeout": 0},
    }


def deliver(root: Path, config: dict[str, Any], rcpt: str) -> tuple[Mailwright, str]:
    with running(root / "a", config) as a:
        qid = submit(a, rcpt)
        return a, a.wait_log(f"{qid}: to=<{rcpt}>")


def test_the_world_is_signed_and_validated(world: World) -> None:
    secure = world.dns.query(f"_25._tcp.mx.ee.{ZONE}", "TLSA")
    assert secure.flags & dns.flags.AD and secure.answer
    insecure = world.dns.query("plain.test", "MX")
    assert not insecure.flags & dns.flags.AD and insecure.answer
    bogus = world.dns.query(f"_25._tcp.mx.bogus.{ZONE}", "TLSA")
    assert bogus.rcode() == dns.rcode.SERVFAIL


def test_dane_ee_match_delivers_over_tls(tmp_path: Path, world: World) -> None:
    with receiver(tmp_path, f"ee.{ZONE}", world.ee) as b:
        _, line = deliver(tmp_path, sender(world, b.port), f"user@ee.{ZONE}")
        assert "stat=Sent" in line and "tls=dane-verified" in line, line
        assert b.wait_log("proto=ESMTPS")


def test_dane_ee_mismatch_defers_and_sends_nothing(tmp_path: Path, world: World) -> None:
    with receiver(tmp_path, f"bad.{ZONE}", world.ee) as b:
        _, line = deliver(tmp_path, sender(world, b.port), f"user@bad.{ZONE}")
        assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
        assert "tls=dane-failed" in line and "DANE verification failed" in line, line
    assert not any("proto=ESMTP" in x for x in b.log)


def test_bogus_tlsa_record_defers(tmp_path: Path, world: World) -> None:
    with receiver(tmp_path, f"bogus.{ZONE}", world.ee) as b:
        _, line = deliver(tmp_path, sender(world, b.port), f"user@bogus.{ZONE}")
        assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
        assert "tls=dane-lookup-failed" in line and "TLSA lookup" in line, line
    assert not any("proto=ESMTP" in x for x in b.log)


def test_dane_ta_chain_for_the_mx_name_delivers(tmp_path: Path, world: World) -> None:
    with receiver(tmp_path, f"ta.{ZONE}", world.ta) as b:
        _, line = deliver(tmp_path, sender(world, b.port), f"user@ta.{ZONE}")
        assert "stat=Sent" in line and "tls=dane-verified" in line, line


def test_dane_host_without_starttls_defers(tmp_path: Path, world: World) -> None:
    require_peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
    sink = smtp_sink.SmtpSink(tmp_path / "sink").start()
    try:
        _, line = deliver(tmp_path, sender(world, sink.port), f"user@nostarttls.{ZONE}")
        assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
        assert "does not offer STARTTLS" in line and "tls=dane-failed" in line, line
        assert sink.messages() == []
    finally:
        sink.stop()


def test_insecure_zone_delivers_with_opportunistic_tls(tmp_path: Path, world: World) -> None:
    stranger = certificate(tmp_path / "plain-tls", "mx.plain.test")
    with receiver(tmp_path, "plain.test", stranger) as b:
        _, line = deliver(tmp_path, sender(world, b.port), "user@plain.test")
        assert "stat=Sent" in line and "tls=" not in line, line
        assert b.wait_log("proto=ESMTPS")


def test_dane_takes_precedence_over_mta_sts(tmp_path: Path, world: World) -> None:
    # enforced policy that lists no MX host of ours, and B's certificate is not in the
    # CAs: MTA-STS alone would defer (tests/integration/test_t07_mtasts.py)
    policy = "version: STSv1\r\nmode: enforce\r\nmx: *.elsewhere.test\r\nmax_age: 86400\r\n"
    world.https.publish(f"mta-sts.sts.{ZONE}", policy)
    with receiver(tmp_path, f"sts.{ZONE}", world.ee) as b:
        _, line = deliver(tmp_path, sender(world, b.port), f"user@sts.{ZONE}")
        assert "stat=Sent" in line and "tls=dane-verified" in line, line
    assert (f"mta-sts.sts.{ZONE}", "/.well-known/mta-sts.txt") in world.https.requests


def test_tls_required_no_goes_despite_a_mismatch(tmp_path: Path, world: World) -> None:
    # RFC 8689 5 (and RFC 8460 5.3: a TLS report must get through the failures it reports)
    rcpt = f"user@bad.{ZONE}"
    message = f"From: a@x.test\r\nTo: {rcpt}\r\nTLS-Required: no\r\n\r\nreport\r\n"
    with receiver(tmp_path, f"bad.{ZONE}", world.ee) as b:
        with running(tmp_path / "a", sender(world, b.port)) as a:
            qid = submit(a, rcpt, message.encode())
            line = a.wait_log(f"{qid}: to=<{rcpt}>")
            assert "stat=Sent" in line and "tls=" not in line, line
            assert a.wait_log(f"{qid}: TLS-Required: No: no DANE or MTA-STS for")
        assert b.wait_log("proto=ESMTPS")


def test_an_alias_mx_host_gets_the_records_where_it_leads(tmp_path: Path, world: World) -> None:
    # mx.alias-bad is a CNAME for mx.bad, whose TLSA record names another key: deferred
    with receiver(tmp_path, f"alias-bad.{ZONE}", world.ee) as b:
        _, line = deliver(tmp_path, sender(world, b.port), f"user@alias-bad.{ZONE}")
        assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
        assert "tls=dane-failed" in line, line
    assert not any("proto=ESMTP" in x for x in b.log)


def test_an_alias_mx_host_may_present_the_name_it_leads_to(tmp_path: Path, world: World) -> None:
    # DANE-TA at mx.ta; the certificate names mx.ta.dane.test, not the MX host name
    # mx.alias-ta.dane.test: both are reference identifiers (RFC 7672 3.2.2)
    with receiver(tmp_path, f"alias-ta.{ZONE}", world.ta) as b:
        _, line = deliver(tmp_path, sender(world, b.port), f"user@alias-ta.{ZONE}")
        assert "stat=Sent" in line and "tls=dane-verified" in line, line


def test_dane_only_defers_a_host_without_records(tmp_path: Path, world: World) -> None:
    # Postfix's dane-only for one destination, delivery.dane off: plain.test is not signed
    stranger = certificate(tmp_path / "plain-tls", "mx.plain.test")
    config = sender(world, 0, dane="off", tls_policy={"plain.test": "dane-only"})
    with receiver(tmp_path, "plain.test", stranger) as b:
        config["delivery"]["smtp_port"] = b.port
        _, line = deliver(tmp_path, config, "user@plain.test")
        assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
        assert "tls=dane-required" in line and "(dane-only)" in line, line
    assert not any("proto=ESMTP" in x for x in b.log)


def test_dane_for_one_destination_only(tmp_path: Path, world: World) -> None:
    config = sender(world, 0, dane="off", tls_policy={f"ee.{ZONE}": "dane"})
    with receiver(tmp_path, f"ee.{ZONE}", world.ee) as b:
        config["delivery"]["smtp_port"] = b.port
        _, line = deliver(tmp_path, config, f"user@ee.{ZONE}")
        assert "stat=Sent" in line and "tls=dane-verified" in line, line
    with receiver(tmp_path / "2", f"bad.{ZONE}", world.ee) as b:  # no entry: no DANE
        config["delivery"]["smtp_port"] = b.port
        _, line = deliver(tmp_path / "2", config, f"user@bad.{ZONE}")
        assert "stat=Sent" in line and "tls=" not in line, line
