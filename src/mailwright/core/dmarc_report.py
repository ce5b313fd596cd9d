"""DMARC aggregate reports (RFC 7489 7.2, Appendix C): the stored rows, the XML, the mail.

``Row`` is what ``policy.dmarc`` keeps per evaluated message of a domain that asks
for reports (``rua``): source address, RFC5322.From and MAIL FROM domains, the
disposition applied, the aligned DKIM and SPF results, the override reasons, the raw
DKIM and SPF results and the policy published, each a plain value (the JSON ones as
text) so that SQLite and PostgreSQL keep them alike. ``aggregate`` groups the rows of
one policy domain into ``Report`` records (same source, identifiers, evaluation and
results: one record with a count); ``Report.xml`` writes the feedback document of
Appendix C (version 1.0; records sorted, so a report is reproducible), ``gzip`` it,
``filename`` (7.2.1.1: ``receiver!policy-domain!begin!end.xml.gz``), ``subject``
(``Report Domain: ... Submitter: ... Report-ID: <...>``) and ``mail`` the
``multipart/mixed`` mail carrying it as ``application/gzip``.

``external_check_name`` is the TXT name of 7.1 that a destination outside the policy
domain's organizational domain must publish (``<policy-domain>._report._dmarc.<dest>``).

Pure data; trusts its caller's rows (values are escaped in the XML). Reads no settings.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import json
import secrets
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate

from mailwright.core.dmarc import Disposition, Evaluation, Identifier, Record

VERSION = "1.0"


@dataclass(frozen=True, slots=True)
class Row:
    """One evaluated message, as stored for reports."""

    at: float
    policy_domain: str
    header_from: str
    source_ip: str
    envelope_from: str
    disposition: str  # none, quarantine, reject: what was done
    dkim: str  # pass or fail: an aligned DKIM pass
    spf: str  # pass or fail: an aligned SPF pass
    reasons: str  # override reasons, comma separated (sampled_out, local_policy)
    auth: str  # JSON: {"dkim": [[domain, selector, result], ...], "spf": [domain, scope, result]}
    policy: str  # JSON: the record published (adkim, aspf, p, sp, pct, fo, rua)

    @classmethod
    def make(
        cls,
        *,
        at: float,
        evaluation: Evaluation,
        source_ip: str,
        envelope_from: str,
        disposition: Disposition,
        reasons: tuple[str, ...],
        spf: Identifier | None,
        dkim: Sequence[Identifier],
    ) -> Row:
        record = evaluation.record
        assert record is not None
        auth = {
            "dkim": [[d.domain, d.selector, d.result] for d in dkim],
            "spf": [spf.domain, spf.scope, spf.result] if spf is not None else None,
        }
        return cls(
            at=at,
            policy_domain=evaluation.policy_domain,
            header_from=evaluation.author_domain,
            source_ip=source_ip,
            envelope_from=envelope_from.lower(),
            disposition=str(disposition),
            dkim="pass" if evaluation.dkim_aligned else "fail",
            spf="pass" if evaluation.spf_aligned else "fail",
            reasons=",".join(reasons),
            auth=json.dumps(auth, separators=(",", ":")),
            policy=policy_json(record),
        )

    def key(self) -> tuple[str, ...]:
        """What makes two rows one report record."""
        return (
            self.source_ip, self.header_from, self.envelope_from, self.disposition,
            self.dkim, self.spf, self.reasons, self.auth,
        )  # fmt: skip


def policy_json(record: Record) -> str:
    published = {
        "adkim": str(record.adkim),
        "aspf": str(record.aspf),
        "p": str(record.p),
        "sp": str(record.sp) if record.sp is not None else None,
        "pct": record.pct,
        "fo": record.fo,
        "rua": [[u.address, u.limit] for u in record.rua],
    }
    return json.dumps(published, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Destination:
    address: str
    limit: int | None  # octets of the report file; None: no limit

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Report:
    """One policy domain's report for one period."""

    policy_domain: str
    begin: int
    end: int
    org_name: str
    email: str
    report_id: str
    published: dict[str, object]
    records: tuple[tuple[Row, int], ...]  # a representative row and its count

    @property
    def destinations(self) -> list[Destination]:
        rua = self.published.get("rua") or []
        assert isinstance(rua, list)
        return [Destination(str(a), None if limit is None else int(limit)) for a, limit in rua]

    @property
    def messages(self) -> int:
        return sum(count for _, count in self.records)

    def xml(self) -> bytes:
        feedback = ET.Element("feedback")
        _text(feedback, "version", VERSION)
        meta = ET.SubElement(feedback, "report_metadata")
        _text(meta, "org_name", self.org_name)
        _text(meta, "email", self.email)
        _text(meta, "report_id", self.report_id)
        span = ET.SubElement(meta, "date_range")
        _text(span, "begin", str(self.begin))
        _text(span, "end", str(self.end))
        published = ET.SubElement(feedback, "policy_published")
        _text(published, "domain", self.policy_domain)
        for tag in ("adkim", "aspf", "p", "sp", "pct", "fo"):
            value = self.published.get(tag)
            if value is not None:
                _text(published, tag, str(value))
        for row, count in self.records:
            _record(feedback, row, count)
        ET.indent(feedback)
        body: bytes = ET.tostring(feedback, "utf-8")
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body

    def gzip(self) -> bytes:
        data: bytes = gzip.compress(self.xml(), mtime=self.end)
        return data

    def filename(self, receiver: str) -> str:
        return f"{receiver}!{self.policy_domain}!{self.begin}!{self.end}.xml.gz"

    def subject(self, receiver: str) -> str:
        return (
            f"Report Domain: {self.policy_domain} Submitter: {receiver} "
            f"Report-ID: <{self.report_id}>"
        )

    def mail(
        self, receiver: str, sender: str, to: str, data: bytes, now: float
    ) -> tuple[list[tuple[str, str]], bytes]:
        """The header fields and the body (CRLF lines) of the mail carrying ``data``
        (the gzip) to ``to`` (7.2.1.1)."""
        boundary = "=_dmarc_" + secrets.token_hex(12)
        name = self.filename(receiver)
        encoded = base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")
        fields = [
            ("From", sender),
            ("To", to),
            ("Subject", self.subject(receiver)),
            ("Date", formatdate(now, localtime=False)),
            ("Message-ID", f"<{self.report_id}.{secrets.token_hex(4)}@{receiver}>"),
            ("Auto-Submitted", "auto-generated"),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
        ]
        lines = [
            "This is a MIME-encapsulated message.",
            "",
            f"--{boundary}",
            "Content-Type: text/plain; charset=us-ascii",
            "",
            f"This is an aggregate DMARC report (RFC 7489) for {self.policy_domain}",
            f"from {receiver}: {self.messages} message(s) from {_utc(self.begin)}"
            f" to {_utc(self.end)}.",
            "",
            f"--{boundary}",
            f'Content-Type: application/gzip; name="{name}"',
            "Content-Transfer-Encoding: base64",
            f'Content-Disposition: attachment; filename="{name}"',
            "",
            encoded.rstrip("\r\n"),
            f"--{boundary}--",
            "",
        ]
        return fields, "\r\n".join(lines).encode("ascii")


def _utc(when: int) -> str:
    return format_datetime(datetime.fromtimestamp(when, UTC), usegmt=True)


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def _address(ip: str) -> str:
    """IPv6 written out in full: Appendix C's pattern knows no ``::``."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    return address.exploded if address.version == 6 else str(address)


def _record(feedback: ET.Element, row: Row, count: int) -> None:
    record = ET.SubElement(feedback, "record")
    xml_row = ET.SubElement(record, "row")
    _text(xml_row, "source_ip", _address(row.source_ip))
    _text(xml_row, "count", str(count))
    evaluated = ET.SubElement(xml_row, "policy_evaluated")
    _text(evaluated, "disposition", row.disposition)
    _text(evaluated, "dkim", row.dkim)
    _text(evaluated, "spf", row.spf)
    for reason in filter(None, row.reasons.split(",")):
        _text(ET.SubElement(evaluated, "reason"), "type", reason)
    identifiers = ET.SubElement(record, "identifiers")
    _text(identifiers, "envelope_from", row.envelope_from)
    _text(identifiers, "header_from", row.header_from)
    auth = json.loads(row.auth)
    results = ET.SubElement(record, "auth_results")
    for domain, selector, result in auth["dkim"]:
        dkim = ET.SubElement(results, "dkim")
        _text(dkim, "domain", domain)
        if selector:
            _text(dkim, "selector", selector)
        _text(dkim, "result", result)
    spf = auth["spf"] or [row.envelope_from, "mfrom", "none"]  # Appendix C: one at least
    element = ET.SubElement(results, "spf")
    _text(element, "domain", spf[0])
    _text(element, "scope", spf[1])
    _text(element, "result", spf[2])


def aggregate(
    rows: Iterable[Row], begin: int, end: int, *, org_name: str, email: str
) -> list[Report]:
    """One report per policy domain, its records counted and sorted; the policy
    published is the latest row's."""
    by_domain: dict[str, list[Row]] = {}
    for row in rows:
        by_domain.setdefault(row.policy_domain, []).append(row)
    reports = []
    for domain in sorted(by_domain):
        group = sorted(by_domain[domain], key=lambda r: r.at)
        counts = Counter(r.key() for r in group)
        first = {r.key(): r for r in reversed(group)}
        records = tuple((first[k], counts[k]) for k in sorted(counts))
        published = json.loads(group[-1].policy)
        report_id = f"{begin}.{domain}.{secrets.token_hex(6)}"
        reports.append(Report(domain, begin, end, org_name, email, report_id, published, records))
    return reports


def external_check_name(policy_domain: str, destination_domain: str) -> str:
    """The TXT name a third-party report destination publishes (RFC 7489 7.1)."""
    return f"{policy_domain}._report._dmarc.{destination_domain}"
