"""policy.dmarc_reports and policy.dmarc_store: a period's rows become one report per policy
domain, claimed once, mailed to the destinations that pass 7.1 and their size limit; the XML
is valid against RFC 7489 Appendix C (the schema the ``dmarc`` package ships)."""

from __future__ import annotations

import asyncio
import gzip
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dmarc.report import DMARCSchema

from mailwright.config.schema import Settings
from mailwright.core.dmarc import Discovery, Disposition, Identifier, PublicSuffixes, evaluate
from mailwright.core.dmarc import parse_record as parse
from mailwright.core.dmarc_report import Row, aggregate
from mailwright.policy.dmarc_reports import ReportRun
from mailwright.policy.dmarc_store import SqliteReportStore
from mailwright.routing.resolver import DnsTemporaryError

PSL = PublicSuffixes.bundled()
DAY = 86400.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY  # a period boundary


class Dns:
    """TXT answers by name; names in ``failing`` fail."""

    def __init__(self, zone: dict[str, list[str]], failing: frozenset[str] = frozenset()) -> None:
        self.zone, self.failing = zone, failing
        self.asked: list[str] = []

    async def records(self, name: str, rdtype: str) -> list[str]:
        self.asked.append(name)
        if name in self.failing:
            raise DnsTemporaryError(f"{name}: SERVFAIL")
        return [f'"{t}"' for t in self.zone.get(name, [])]


def row(at: float, record: str, *, ip: str = "192.0.2.1", spf: str = "pass") -> Row:
    evaluation = evaluate(
        "example.com",
        Discovery(None, "example.com", parse(record)),
        Identifier("example.com", spf),
        [Identifier("example.com", "fail", "s1")],
        PSL,
        random.Random(1),
    )
    return Row.make(
        at=at,
        evaluation=evaluation,
        source_ip=ip,
        envelope_from="example.com",
        disposition=evaluation.disposition,
        reasons=(),
        spf=Identifier("example.com", spf),
        dkim=[Identifier("example.com", "fail", "s1")],
    )


RECORD = (
    "v=DMARC1; p=reject; rua=mailto:d@example.com,mailto:r@reports.test,"
    "mailto:x@stranger.test,mailto:tiny@example.com!50"
)


@pytest.fixture
def store(tmp_path: Path) -> SqliteReportStore:
    return SqliteReportStore(tmp_path / "dmarc.db")


def run_of(store: SqliteReportStore, dns: Dns) -> ReportRun:
    settings = Settings(hostname="mx.test")
    return ReportRun(settings, store, dns, PSL)  # type: ignore[arg-type]  # a stand-in resolver


def test_the_store_keeps_rows_and_claims_a_period_once(store: SqliteReportStore) -> None:
    store.add(row(T0 - 10, RECORD))
    store.add(row(T0 + 10, RECORD))
    assert [r.at for r in store.rows(T0 - DAY, T0)] == [T0 - 10]
    assert store.claim(T0) and not store.claim(T0)
    store.purge(T0)
    assert [r.at for r in store.rows(0, T0 + DAY)] == [T0 + 10]


def test_a_run_mails_the_last_period_once(store: SqliteReportStore) -> None:
    for i in range(3):
        store.add(row(T0 - 100 + i, RECORD))
    store.add(row(T0 - 50, RECORD, ip="192.0.2.9", spf="fail"))
    store.add(row(T0 + 5, RECORD))  # the next period
    dns = Dns({"example.com._report._dmarc.reports.test": ["v=DMARC1"]})
    run = run_of(store, dns)
    messages = asyncio.run(run.due(T0 + 60))
    assert [str(m.envelope.recipients[0].address) for m in messages] == [
        "d@example.com",
        "r@reports.test",
    ]
    assert dns.asked == [
        "example.com._report._dmarc.reports.test",
        "example.com._report._dmarc.stranger.test",
    ]
    assert asyncio.run(run.due(T0 + 120)) == []  # claimed: not again
    assert [r.at for r in store.rows(0, T0 + DAY)] == [T0 + 5]  # the period's rows went
    message = messages[0]
    assert str(message.envelope.sender) == "postmaster@mx.test"
    subject = message.headers.get("Subject")
    assert subject is not None and subject.text.startswith(
        "Report Domain: example.com Submitter: mx.test Report-ID: <"
    )
    body = b"".join(message.body.chunks())
    assert f"mx.test!example.com!{int(T0 - DAY)}!{int(T0) - 1}.xml.gz".encode() in body


def test_a_failing_external_check_skips_the_destination(store: SqliteReportStore) -> None:
    store.add(row(T0 - 100, RECORD))
    dns = Dns({}, failing=frozenset({"example.com._report._dmarc.reports.test"}))
    [plan] = asyncio.run(run_of(store, dns).plan_period(T0 - DAY, T0))
    assert [d.address for d in plan.sent] == ["d@example.com"]
    reasons = dict((d.address, why) for d, why in plan.skipped)
    assert "tried again next time" in reasons["r@reports.test"]
    assert "not authorized" in reasons["x@stranger.test"]
    assert "over its limit of 50" in reasons["tiny@example.com"]


def test_the_xml_is_valid_and_counts_the_rows() -> None:
    rows = [row(T0 + i, RECORD) for i in range(3)] + [row(T0, RECORD, ip="2001:db8::1")]
    [report] = aggregate(rows, int(T0), int(T0 + DAY) - 1, org_name="mx.test", email="p@mx.test")
    xml = gzip.decompress(report.gzip())
    DMARCSchema.validate(xml.decode())
    feedback = ET.fromstring(xml)
    counts = {r.findtext("row/source_ip"): r.findtext("row/count") for r in feedback.iter("record")}
    # IPv6 in full: the schema's pattern has no "::"
    assert counts == {"192.0.2.1": "3", "2001:0db8:0000:0000:0000:0000:0000:0001": "1"}
    assert feedback.findtext("policy_published/p") == "reject"
    assert feedback.findtext("report_metadata/date_range/begin") == str(int(T0))
    assert [e.findtext("result") for e in feedback.iter("dkim") if e.find("result") is not None]


def test_disposition_in_rows_is_what_was_done() -> None:
    r = row(T0, "v=DMARC1; p=quarantine; rua=mailto:d@example.com", spf="fail")
    assert (r.disposition, r.spf, r.dkim) == (str(Disposition.QUARANTINE), "fail", "fail")


def test_the_postgresql_store_is_shared_and_claims_once(postgres_database: str) -> None:
    pytest.importorskip("psycopg")
    from mailwright.policy.dmarc_store import PostgresReportStore
    from tests.support.postgres import state_database

    node_a = PostgresReportStore(state_database(postgres_database))
    node_b = PostgresReportStore(state_database(postgres_database))
    node_a.add(row(T0 - 10, RECORD))
    node_b.add(row(T0 - 5, RECORD, ip="192.0.2.7"))
    node_b.add(row(T0 + 10, RECORD))
    assert [r.source_ip for r in node_a.rows(T0 - DAY, T0)] == ["192.0.2.1", "192.0.2.7"]
    assert node_b.rows(T0 - DAY, T0)[0] == row(T0 - 10, RECORD)  # every column back as written
    assert node_b.claim(T0) and not node_a.claim(T0)
    node_b.purge(T0)
    assert [r.at for r in node_a.rows(0, T0 + DAY)] == [T0 + 10]
