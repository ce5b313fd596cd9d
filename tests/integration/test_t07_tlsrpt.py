"""SMTP TLS reporting (RFC 8460) from a real daemon: A relays to B (found through dnsmasq)
under an enforced MTA-STS policy (b.test: verified TLS, success), without a policy (c.test:
opportunistic TLS, success) and under a policy whose MX host presents a certificate for
another name (e.test: certificate-host-mismatch, deferred; the failure details name B's
EHLO name and OpenSSL's words for the mismatch). Then ``mailwright tlsrpt report``
(the control socket, no waiting for the day to end) sends the day's reports: mailed through
A's queue to a real smtp-sink (a multipart/report with the gzip JSON, whose counts are the
sessions) and POSTed to a local HTTPS server, as each domain's ``_smtp._tls`` record asks.
The mailed reports carry the DKIM signature of a.test (RFC 8460 5.3; the key of A's ``dkim``
filter), which dkimpy verifies, and ``TLS-Required: No``: e.test's report reaches B over
the very policy failure it reports."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.test_t07_outbound_tls import submit
from tests.support import smtp_sink
from tests.support.arc import Dns, pem_file, rsa_key
from tests.support.daemon import Mailwright, running, wait_until
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.https import PolicyServer
from tests.support.peers import peer, require_module, require_peer
from tests.support.security import certificate
from tests.support.smtp_sink import SmtpSink

pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")


def policy(mx: str) -> str:
    return f"version: STSv1\r\nmode: enforce\r\nmx: {mx}\r\nmax_age: 86400\r\n"


def txt(dns: DnsServer, name: str, text: str) -> None:
    """A TXT record of one string, commas included (dnsmasq's --txt-record splits at them)."""
    data = text.encode()
    dns.option(f"--dns-rr={name},16,{bytes([len(data)]).hex()}{data.hex()}").zone(name)


@contextmanager
def world(root: Path) -> Iterator[tuple[DnsServer, PolicyServer]]:
    with PolicyServer(root, "mta-sts.b.test", "mta-sts.e.test", "reports.b.test") as https:
        https.publish("mta-sts.b.test", policy("mx.b.test"))
        https.publish("mta-sts.e.test", policy("mx.e.test"))
        rua = f"https://reports.b.test:{https.port}"
        dns = DnsServer(root / "dns")
        for domain in ("b", "c", "e"):
            dns.mx(f"{domain}.test", f"mx.{domain}.test").host(f"mx.{domain}.test", "127.0.0.1")
        for domain in ("b", "e"):
            dns.host(f"mta-sts.{domain}.test", "127.0.0.1")
            dns.txt(f"_mta-sts.{domain}.test", "v=STSv1; id=20260101;")
        dns.host("reports.b.test", "127.0.0.1")
        txt(dns, "_smtp._tls.b.test", f"v=TLSRPTv1; rua=mailto:tls@reports.test,{rua}/b")
        txt(dns, "_smtp._tls.c.test", "v=TLSRPTv1; rua=mailto:tls@reports.test")
        txt(dns, "_smtp._tls.e.test", f"v=TLSRPTv1;rua={rua}/e,mailto:user@e.test")
        with dns:
            yield dns, https


@contextmanager
def receiver(root: Path) -> Iterator[Mailwright]:
    cert, key = certificate(root / "b-tls", "mx.b.test")
    config = {
        "hostname": "mx.b.test",
        "tls": {"certificate": str(cert), "key": str(key)},
        "routing": {"local_domains": ["b.test", "c.test", "e.test"]},
    }
    with running(root / "b", config) as mw:
        mw.cert = cert  # type: ignore[attr-defined]
        yield mw


def sender(
    root: Path, dns: DnsServer, https: PolicyServer, b: Mailwright, sink: int, key: Path
) -> Any:
    cas = root / "cas.pem"
    cas.write_bytes(https.cert.read_bytes() + b.cert.read_bytes())  # type: ignore[attr-defined]
    (root / "transport").write_text(f"reports.test smtp:[127.0.0.1]:{sink}\n")
    return {
        "hostname": "a.test",
        "dns": dns.settings(),
        "routing": {"transport_table": str(root / "transport")},
        "delivery": {
            "mode": "background",
            "smtp_port": b.port,
            "mta_sts_port": https.port,
            "tls_ca_file": str(cas),
            "idle_connection_timeout": 0.5,
        },
        "queue": {"host_status_timeout": 0},
        "tls_reporting": {
            "enabled": True,
            "organization": "A Test Org",
            "contact": "tls-admin@a.test",
            "flush_interval": 3600,  # only the report run flushes: nothing by the clock
        },
        "filters": [
            {
                "plugin": "dkim",
                "options": {"domain": "a.test", "selector": "r", "key_file": str(key)},
            }
        ],
    }


def dkim_key(root: Path, dns: Dns) -> Path:
    key = rsa_key()
    dns.add("r", "a.test", key)
    return Path(pem_file(root / "dkim.pem", key))


def reports_in(sink: SmtpSink) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Domain -> (the parsed mail, the JSON report it carries)."""
    out = {}
    for message in sink.messages():
        parsed = email.message_from_bytes(message.content, policy=email.policy.default)
        assert parsed.get_content_type() == "multipart/report", parsed
        assert parsed.get_param("report-type") == "tlsrpt"
        [attachment] = [p for p in parsed.iter_parts() if p.get_content_type() != "text/plain"]
        assert attachment.get_content_type() == "application/tlsrpt+gzip"
        out[str(parsed["TLS-Report-Domain"])] = (
            parsed,
            json.loads(gzip.decompress(attachment.get_content())),
        )
    return out


def summary(report: dict[str, Any]) -> tuple[str, int, int, list[str]]:
    [entry] = report["policies"]
    counts = entry["summary"]
    failures = [d["result-type"] for d in entry.get("failure-details", [])]
    return (
        entry["policy"]["policy-type"],
        counts["total-successful-session-count"],
        counts["total-failure-session-count"],
        failures,
    )


def test_daily_reports_mailed_and_posted(tmp_path: Path) -> None:
    require_peer("smtp-sink", smtp_sink.available(), "postfix's smtp-sink is not installed")
    dkim = require_module("dkim", "pip install '.[dev]' (dkimpy)")
    keys = Dns()
    key = dkim_key(tmp_path, keys)
    with (
        world(tmp_path) as (dns, https),
        receiver(tmp_path) as b,
        SmtpSink(tmp_path / "sink") as sink,
        running(tmp_path / "a", sender(tmp_path, dns, https, b, sink.port, key)) as a,
    ):
        # one message each: a second one could reuse the idle session (one TLS session)
        for rcpt in ("user@b.test", "user@c.test", "user@e.test"):
            qid = submit(a, rcpt)
            line = a.wait_log(f"{qid}: to=<{rcpt}>")
            assert ("stat=Deferred" in line) == rcpt.endswith("e.test"), line

        dry = a.cli("tlsrpt", "report", "--dry-run", "--day", "today", "--json")
        assert dry.returncode == 0, dry.stderr
        shown = {r["domain"]: r for r in json.loads(dry.stdout)}
        assert sorted(shown) == ["b.test", "c.test", "e.test"]
        assert shown["c.test"]["rua"] == ["mailto:tls@reports.test"]
        assert "sent" not in shown["b.test"] and https.posts == []

        run = a.cli("tlsrpt", "report", "--day", "today")
        assert run.returncode == 0, run.stderr
        out = run.stdout.decode()
        assert "b.test: 1 successful, 0 failed" in out, out
        wait_until(lambda: len(sink.messages()) == 2, what="two report mails")
        mailed = reports_in(sink)
        assert sorted(mailed) == ["b.test", "c.test"]
        mail, b_report = mailed["b.test"]
        assert mail["TLS-Report-Submitter"] == "a.test"
        assert b_report["organization-name"] == "A Test Org"
        assert b_report["contact-info"] == "tls-admin@a.test"
        assert summary(b_report) == ("sts", 1, 0, [])
        assert b_report["policies"][0]["policy"]["mx-host"] == ["mx.b.test"]
        assert summary(mailed["c.test"][1]) == ("no-policy-found", 1, 0, [])
        for message in sink.messages():  # RFC 8460 5.3: signed by the reporting domain
            raw = message.content.replace(b"\n", b"\r\n")  # the sink's dump has LF ends
            assert raw.startswith(b"DKIM-Signature:"), raw[:200]
            assert b"\r\nTLS-Required: No\r\n" in raw
            assert dkim.verify(raw, dnsfunc=keys.dnsfunc)
            assert not dkim.verify(raw.replace(b"Report Domain: ", b"Report Domain: x"),
                                   dnsfunc=keys.dnsfunc)  # fmt: skip
        assert a.wait_log("TLS report for b.test to <tls@reports.test>, DKIM signed d=a.test s=r")

        # e.test's report: mailed to its MX host B despite the certificate for another
        # name that made A defer the test message (RFC 8689's TLS-Required: No)
        queued = a.wait_log("TLS report for e.test to <user@e.test>")
        qid = queued.split(": TLS report")[0].split()[-1]
        line = a.wait_log(f"{qid}: to=<user@e.test>")
        assert "stat=Sent" in line, line
        assert a.wait_log(f"{qid}: TLS-Required: No: no DANE or MTA-STS for")
        received = b.wait_log("from=<noreply-tlsrpt@a.test>")
        assert "proto=ESMTPS" in received, received  # opportunistic TLS all the same

        posted = {path: body for _, path, kind, body in https.posts}
        assert sorted(posted) == ["/b", "/e"]
        assert all(kind == "application/tlsrpt+gzip" for _, _, kind, _ in https.posts)
        assert json.loads(gzip.decompress(posted["/b"])) == b_report
        e_report = json.loads(gzip.decompress(posted["/e"]))
        kind, good, failed, _ = summary(e_report)
        assert (kind, good) == ("sts", 0) and failed >= 1  # a retry may have come first
        [detail] = e_report["policies"][0]["failure-details"]
        assert detail["result-type"] == "certificate-host-mismatch"
        assert detail["receiving-mx-hostname"] == "mx.e.test"
        assert detail["receiving-ip"] == "127.0.0.1"
        assert detail["sending-mta-ip"] == "127.0.0.1"
        assert detail["receiving-mx-helo"] == "mx.b.test"  # B's EHLO reply: its hostname
        reason = "Hostname mismatch, certificate is not valid for 'mx.e.test'."
        assert detail["failure-reason-code"] == reason

        assert not any("will not be DKIM-signed" in x for x in a.log)
        again = a.cli("tlsrpt", "report", "--day", "today")  # a day is reported once
        assert again.returncode == 0 and b"no TLS reports" in again.stdout, again.stdout
    assert len(https.posts) == 2


def test_a_refused_post_is_tried_again(tmp_path: Path) -> None:
    """RFC 8460 5.4: the report server answers 503 at first; the report is kept and POSTed
    again once the retry interval has passed, the same bytes."""
    require_peer("smtp-sink", smtp_sink.available(), "postfix's smtp-sink is not installed")
    keys = Dns()
    key = dkim_key(tmp_path, keys)
    with (
        world(tmp_path) as (dns, https),
        receiver(tmp_path) as b,
        SmtpSink(tmp_path / "sink") as sink,
    ):
        config = sender(tmp_path, dns, https, b, sink.port, key)
        config["tls_reporting"].update(flush_interval="1s", post_retry_interval="1s")
        with running(tmp_path / "a", config) as a:
            qid = submit(a, "user@b.test")
            assert "stat=Sent" in a.wait_log(f"{qid}: to=<user@b.test>")
            https.post_status = 503
            run = a.cli("tlsrpt", "report", "--day", "today")
            assert run.returncode == 0, run.stderr
            refused = a.wait_log("TLS report for b.test: https://reports.b.test")
            assert "HTTP status 503" in refused and "tried again in 1s" in refused, refused
            https.post_status = 201
            posted = a.wait_log(f"posted to https://reports.b.test:{https.port}/b (attempt ")
            assert "TLS report for b.test of " in posted, posted
        wait_until(lambda: len(sink.messages()) == 1, what="the mailed report")
    bodies = [body for _, path, _, body in https.posts if path == "/b"]
    assert len(bodies) >= 2 and len(set(bodies)) == 1  # the same report each time
    assert summary(json.loads(gzip.decompress(bodies[0]))) == ("sts", 1, 0, [])
