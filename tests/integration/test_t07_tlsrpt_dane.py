"""TLS reporting (RFC 8460) of DANE outcomes, over the DNSSEC world of test_t07_dane (NSD
serving a signed zone, Unbound validating it): a DANE-EE match is a ``tlsa`` success, a
certificate matching no record ``tlsa-invalid``, a bogus TLSA record ``dnssec-invalid``,
an insecure zone ``no-policy-found``, and ``dane-required`` under a ``dane-only``
tls_policy entry; what ``mailwright tlsrpt report --dry-run`` shows, the failure details'
``receiving-mx-helo`` (B's EHLO name, for a session that got that far) and
``failure-reason-code`` included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.test_t07_dane import ZONE, World, receiver, sender, world
from tests.integration.test_t07_outbound_tls import submit
from tests.support import dnssec
from tests.support.daemon import running
from tests.support.peers import peer

pytestmark = peer("nsd, unbound, ldns-signzone", dnssec.available(), dnssec.WHY)
__all__ = ["world"]  # the module's fixture, used here too


def policies(report: dict[str, Any]) -> list[tuple[str, int, int, list[str]]]:
    out = []
    for entry in report["policies"]:
        failures = [d["result-type"] for d in entry.get("failure-details", [])]
        counts = entry["summary"]
        out.append(
            (
                entry["policy"]["policy-type"],
                counts["total-successful-session-count"],
                counts["total-failure-session-count"],
                failures,
            )
        )
    return out


def test_dane_outcomes_are_counted(tmp_path: Path, world: World) -> None:
    with receiver(tmp_path, f"ee.{ZONE}", world.ee) as b:
        config = sender(world, b.port)
        config["tls_reporting"] = {"enabled": True, "flush_interval": 3600}
        config["delivery"]["tls_policy"] = {"only.test": "dane-only"}
        with running(tmp_path / "a", config) as a:
            # no DKIM key for the reports: said once at the start (docs/tlsrpt.md)
            assert a.wait_log("tls_reporting: mailed reports will not be DKIM-signed")
            for domain in (f"ee.{ZONE}", f"bad.{ZONE}", f"bogus.{ZONE}", "plain.test", "only.test"):
                qid = submit(a, f"user@{domain}")
                a.wait_log(f"{qid}: to=<user@{domain}>")
            shown = a.cli("tlsrpt", "report", "--dry-run", "--day", "today", "--json")
            assert shown.returncode == 0, shown.stderr
    reports = {r["domain"]: r["report"] for r in json.loads(shown.stdout)}
    assert sorted(reports) == sorted(
        [f"ee.{ZONE}", f"bad.{ZONE}", f"bogus.{ZONE}", "plain.test", "only.test"]
    )
    assert policies(reports[f"ee.{ZONE}"]) == [("tlsa", 1, 0, [])]
    [ee] = reports[f"ee.{ZONE}"]["policies"]
    assert ee["policy"]["mx-host"] == [f"mx.ee.{ZONE}"]
    assert ee["policy"]["policy-string"][0].startswith("3 1 1 ")
    assert policies(reports[f"bad.{ZONE}"]) == [("tlsa", 0, 1, ["tlsa-invalid"])]
    assert policies(reports[f"bogus.{ZONE}"]) == [("tlsa", 0, 1, ["dnssec-invalid"])]
    assert policies(reports["plain.test"]) == [("no-policy-found", 1, 0, [])]
    assert policies(reports["only.test"]) == [("tlsa", 0, 1, ["dane-required"])]
    [only] = reports["only.test"]["policies"]
    assert only["failure-details"][0]["receiving-mx-hostname"] == "mx.only.test"
    # B (hostname mx.ee.dane.test) answered every EHLO; a host never connected to has no name
    assert details(reports[f"bad.{ZONE}"]) == [
        ("tlsa-invalid", f"mx.ee.{ZONE}", "no TLSA record matched the certificate chain")
    ]
    assert details(reports[f"bogus.{ZONE}"]) == [("dnssec-invalid", None, "TLSA lookup failed")]
    assert details(reports["only.test"]) == [
        ("dane-required", None, "no DNSSEC-validated TLSA records")
    ]


def details(report: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(result-type, receiving-mx-helo, failure-reason-code) of each failure detail."""
    [entry] = report["policies"]
    return [
        (d["result-type"], d.get("receiving-mx-helo"), d.get("failure-reason-code"))
        for d in entry["failure-details"]
    ]
