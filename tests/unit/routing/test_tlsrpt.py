"""SMTP TLS reporting (RFC 8460): the TXT record, the counts, the store (and an older
store's file), the JSON report, its mail (section 5.3) and its HTTPS POST (section 5.4, to
a real local HTTPS server)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from mailwright.routing.mtasts import StsMode, StsPolicy
from mailwright.routing.resolver import MailHost
from mailwright.routing.tlsrpt import (
    PolicyType,
    RecordError,
    ReportedPolicy,
    Result,
    Tally,
    TlsRecorder,
    detail_text,
    parse_record,
)
from mailwright.routing.tlsrpt_report import (
    MEDIA_TYPE,
    PostError,
    build_report,
    compressed,
    file_name,
    post_report,
    report_message,
)
from mailwright.routing.tlsrpt_store import PendingPost, SqliteReportStore
from tests.support.https import PolicyServer

DAY = "2026-03-01"
NOON = 1772366400.0  # 2026-03-01T12:00:00Z
STS = ReportedPolicy.sts("b.test", StsPolicy(StsMode.ENFORCE, ("mx.b.test", "*.b.test"), 86400))
NONE = ReportedPolicy.none("c.test")


# ---- the _smtp._tls record ------------------------------------------------------------------


def test_record_with_both_schemes() -> None:
    texts = ["v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls%2Breports@b.test,https://r.b.test/tls"]
    addresses = parse_record(texts)
    assert addresses is not None
    assert addresses.mailto == ("tls+reports@b.test",)
    assert addresses.https == ("https://r.b.test/tls",)


def test_record_spacing_and_final_semicolon() -> None:
    addresses = parse_record(["v=TLSRPTv1 ;  rua=mailto:a@b.test , mailto:c@b.test ;"])
    assert addresses is not None and addresses.mailto == ("a@b.test", "c@b.test")


def test_no_record_is_none() -> None:
    assert parse_record(["v=STSv1; id=1"]) is None
    assert parse_record([]) is None


@pytest.mark.parametrize(
    "texts",
    [
        ["v=TLSRPTv1; rua=mailto:a@b.test", "v=TLSRPTv1; rua=mailto:c@b.test"],  # two
        ["v=TLSRPTv1;"],  # no rua
        ["v=TLSRPTv1; rua=http://plain.b.test/"],  # neither mailto: nor https:
        ["v=TLSRPTv1x; rua=mailto:a@b.test"],  # another version
        ["v=TLSRPTv1; rua"],  # not name=value
    ],
)
def test_unusable_records_raise(texts: list[str]) -> None:
    with pytest.raises(RecordError):
        parse_record(texts)


# ---- counting ---------------------------------------------------------------------------------


def test_recorder_counts_successes_as_totals_and_failures_by_place() -> None:
    recorder = TlsRecorder(clock=lambda: NOON)
    for ip in ("192.0.2.1", "192.0.2.2"):
        recorder.record(STS, Result.SUCCESS, sending_ip="198.51.100.1", receiving_ip=ip)
    for _ in range(3):
        recorder.record(
            STS,
            Result.CERTIFICATE_EXPIRED,
            sending_ip="198.51.100.1",
            receiving_mx="MX.b.test.",
            receiving_ip="192.0.2.1",
        )
    counts = recorder.take()
    assert len(counts) == 2
    success = next(t for t in counts if t.result is Result.SUCCESS)
    failure = next(t for t in counts if t.result is not Result.SUCCESS)
    assert counts[success] == 2 and success.receiving_ip == "" and success.day == DAY
    assert counts[failure] == 3 and failure.receiving_mx == "mx.b.test"
    assert recorder.take() == {}
    recorder.give_back(counts)
    assert recorder.take() == counts


def test_detail_text_is_printable_ascii_and_at_most_100_characters() -> None:
    assert detail_text("certificate has expired") == "certificate has expired"
    assert detail_text("caf\u00e9\x00\x1b[31m\tbell\x07\x7f~") == "caf???[31m?bell??~"
    assert detail_text("x" * 150) == "x" * 100
    assert detail_text("\u00e9" * 150) == "?" * 100  # cut in characters, not bytes
    assert detail_text("") == ""


def test_recorder_keeps_the_helo_and_reason_of_failures_only() -> None:
    recorder = TlsRecorder(clock=lambda: NOON)
    recorder.record(STS, Result.SUCCESS, receiving_helo="mx.b.test", reason="none")
    recorder.record(
        STS,
        Result.CERTIFICATE_EXPIRED,
        receiving_mx="mx.b.test",
        receiving_helo="MX1.B.Test.",
        reason="certificate has expired",
    )
    recorder.record(
        NONE,
        Result.STARTTLS_NOT_SUPPORTED,
        receiving_mx="mx.c.test",
        receiving_helo="mx.\u00e9.test",
        reason="454 4.7.0 " + "no TLS\r\n" * 20,
    )
    counts = recorder.take()
    assert len(counts) == 3
    by_result = {t.result: t for t in counts}
    success = by_result[Result.SUCCESS]
    assert (success.receiving_helo, success.reason) == ("", "")
    expired = by_result[Result.CERTIFICATE_EXPIRED]
    assert (expired.receiving_helo, expired.reason) == ("mx1.b.test", "certificate has expired")
    plain = by_result[Result.STARTTLS_NOT_SUPPORTED]
    assert plain.receiving_helo == "mx.?.test"
    assert plain.reason.startswith("454 4.7.0 no TLS??no TLS??") and len(plain.reason) == 100


def test_sts_policy_strings() -> None:
    assert STS.type is PolicyType.STS
    assert STS.strings == (
        "version: STSv1",
        "mode: enforce",
        "mx: mx.b.test",
        "mx: *.b.test",
        "max_age: 86400",
    )
    assert STS.mx_hosts == ("mx.b.test", "*.b.test")


# ---- the store ----------------------------------------------------------------------------------


def test_store_adds_counts_and_hands_each_day_to_one_owner(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "tlsrpt.db")
    recorder = TlsRecorder(clock=lambda: NOON)
    recorder.record(STS, Result.SUCCESS)
    recorder.record(NONE, Result.STARTTLS_NOT_SUPPORTED, receiving_mx="mx.c.test")
    first = recorder.take()
    store.add(first)
    store.add(first)  # a second flush adds to the counters, no new rows
    assert store.days() == [DAY]
    assert store.counts(DAY) == {tally: 2 * n for tally, n in first.items()}
    assert store.claim(DAY, "a", NOON, 60)
    assert not store.claim(DAY, "b", NOON + 30, 60)  # a's lease holds
    assert store.claim(DAY, "b", NOON + 61, 60)  # a's lease ran out: a died sending
    store.finish(DAY, "b", NOON + 62)
    assert store.days() == [] and store.counts(DAY) == {}
    assert not store.claim(DAY, "c", NOON + 10_000, 60)  # sent: never again
    store.add(first)  # a late flush of a day already reported
    assert store.days() == []


def details(store: SqliteReportStore) -> dict[tuple[str, str], tuple[str, str, int]]:
    """(result type, receiving MX) -> (EHLO name, reason, count) of the day's failures."""
    return {
        (t.result.value, t.receiving_mx): (t.receiving_helo, t.reason, n)
        for t, n in store.counts(DAY).items()
        if t.result is not Result.SUCCESS
    }


def test_store_keeps_the_latest_helo_and_reason_of_each_counter(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "tlsrpt.db")
    recorder = TlsRecorder(clock=lambda: NOON)

    def flush(helo: str, reason: str) -> None:
        recorder.record(STS, Result.CERTIFICATE_EXPIRED, sending_ip="198.51.100.1",
                        receiving_mx="mx.b.test", receiving_ip="192.0.2.1",
                        receiving_helo=helo, reason=reason)  # fmt: skip
        store.add(recorder.take())

    flush("mx1.b.test", "certificate has expired")
    [(tally, count)] = store.counts(DAY).items()
    assert count == 1 and tally == Tally(
        DAY, STS, Result.CERTIFICATE_EXPIRED, "198.51.100.1", "mx.b.test", "192.0.2.1",
        "mx1.b.test", "certificate has expired",
    )  # fmt: skip
    flush("", "")  # nothing new to say: what is stored stays
    assert details(store) == {
        ("certificate-expired", "mx.b.test"): ("mx1.b.test", "certificate has expired", 2)
    }
    flush("", "certificate has expired again")  # one row per counter, its latest reason
    flush("mx2.b.test", "")
    assert details(store) == {
        ("certificate-expired", "mx.b.test"): ("mx2.b.test", "certificate has expired again", 4)
    }


# tlsrpt.db as the version before receiving-mx-helo and failure-reason-code made it
OLD_COUNTS_TABLE = (
    "CREATE TABLE tlsrpt_counts (day TEXT NOT NULL, domain TEXT NOT NULL,"
    " policy_type TEXT NOT NULL, policy_strings TEXT NOT NULL, mx_hosts TEXT NOT NULL,"
    " result TEXT NOT NULL, sending_ip TEXT NOT NULL, receiving_mx TEXT NOT NULL,"
    " receiving_ip TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (day, domain,"
    " policy_type, policy_strings, mx_hosts, result, sending_ip, receiving_mx, receiving_ip))"
)


def old_store(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")  # as every version left it
        db.execute(OLD_COUNTS_TABLE)
        db.execute(
            "INSERT INTO tlsrpt_counts VALUES (?, 'c.test', 'no-policy-found', '[]', '[]',"
            " 'starttls-not-supported', '198.51.100.1', 'mx.c.test', '192.0.2.3', 7)",
            (DAY,),
        )
    db.close()


def test_an_older_store_gets_the_columns_and_keeps_its_counts(tmp_path: Path) -> None:
    path = tmp_path / "tlsrpt.db"
    old_store(path)
    store = SqliteReportStore(path)
    assert store.days() == [DAY]
    assert details(store) == {("starttls-not-supported", "mx.c.test"): ("", "", 7)}
    with closing(sqlite3.connect(path)) as db:
        columns = {row[1]: row for row in db.execute("PRAGMA table_info(tlsrpt_counts)")}
    for name in ("receiving_helo", "failure_reason"):
        _, _, kind, notnull, default, key = columns[name]
        assert (kind, notnull, default, key) == ("TEXT", 1, "''", 0)  # not in the key
    recorder = TlsRecorder(clock=lambda: NOON)
    recorder.record(NONE, Result.STARTTLS_NOT_SUPPORTED, sending_ip="198.51.100.1",
                    receiving_mx="mx.c.test", receiving_ip="192.0.2.3",
                    receiving_helo="mx.c.test", reason="STARTTLS not offered")  # fmt: skip
    store.add(recorder.take())  # the old row's counter
    assert details(store) == {
        ("starttls-not-supported", "mx.c.test"): ("mx.c.test", "STARTTLS not offered", 8)
    }
    report = build_report("c.test", DAY, store.counts(DAY), organization="o", contact="c",
                          submitter="a.test")  # fmt: skip
    [detail] = report["policies"][0]["failure-details"]
    assert detail["receiving-mx-helo"] == "mx.c.test" and detail["failed-session-count"] == 8


def test_processes_opening_an_older_store_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "tlsrpt.db"
    old_store(path)
    start = threading.Barrier(6)
    seen: list[object] = []

    def open_and_read() -> None:  # a connection each, as each process has
        start.wait(timeout=30)
        try:
            seen.append(len(SqliteReportStore(path).counts(DAY)))
        except Exception as exc:
            seen.append(exc)

    threads = [threading.Thread(target=open_and_read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert seen == [1] * 6
    assert details(SqliteReportStore(path)) == {
        ("starttls-not-supported", "mx.c.test"): ("", "", 7)
    }


def test_store_keeps_failed_posts_for_one_process_at_a_time(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "tlsrpt.db")
    post = PendingPost("https://r.b.test/x", "b.test", DAY, b"\x1f\x8b gzip", NOON, NOON + 300, 1)
    store.retry_later(post)
    assert store.take_due(NOON + 299, 900, 10) == []  # not due yet
    [taken] = store.take_due(NOON + 300, 900, 10)
    assert taken == PendingPost(post.url, "b.test", DAY, post.data, NOON, NOON + 1200, 1)
    assert store.take_due(NOON + 600, 900, 10) == []  # leased to the first taker
    store.retry_later(PendingPost(post.url, "b.test", DAY, post.data, NOON, NOON + 900, 2))
    [again] = store.take_due(NOON + 900, 900, 10)
    assert again.attempts == 2
    store.forget(again)
    assert store.take_due(NOON + 99_999, 900, 10) == []


def test_store_hands_out_at_most_the_limit_oldest_first(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "tlsrpt.db")
    for n in range(5):
        store.retry_later(
            PendingPost(f"https://r{n}.test/", "b.test", DAY, b"z", NOON, NOON + 10 - n, 1)
        )
    first = store.take_due(NOON + 100, 900, 2)
    assert sorted(p.url for p in first) == ["https://r3.test/", "https://r4.test/"]
    rest = store.take_due(NOON + 100, 900, 10)
    assert sorted(p.url for p in rest) == [f"https://r{n}.test/" for n in range(3)]


# ---- the report ---------------------------------------------------------------------------------


def counts() -> dict[Any, int]:
    recorder = TlsRecorder(clock=lambda: NOON)
    for _ in range(5):
        recorder.record(STS, Result.SUCCESS)
    recorder.record(
        STS,
        Result.CERTIFICATE_HOST_MISMATCH,
        sending_ip="198.51.100.1",
        receiving_mx="mx2.b.test",
        receiving_ip="192.0.2.2",
    )
    recorder.record(NONE, Result.SUCCESS)  # another domain: not in b.test's report
    return recorder.take()


def test_report_has_the_fields_of_rfc_8460_section_4() -> None:
    report = build_report(
        "b.test", DAY, counts(), organization="A Org", contact="tls@a.test", submitter="a.test"
    )
    assert set(report) == {
        "organization-name",
        "date-range",
        "contact-info",
        "report-id",
        "policies",
    }
    assert report["organization-name"] == "A Org" and report["contact-info"] == "tls@a.test"
    assert report["date-range"] == {
        "start-datetime": "2026-03-01T00:00:00Z",
        "end-datetime": "2026-03-02T00:00:00Z",
    }
    assert report["report-id"] == "2026-03-01T00:00:00Z_b.test_a.test"
    [entry] = report["policies"]
    assert entry["policy"] == {
        "policy-type": "sts",
        "policy-string": list(STS.strings),
        "policy-domain": "b.test",
        "mx-host": ["mx.b.test", "*.b.test"],
    }
    assert entry["summary"] == {
        "total-successful-session-count": 5,
        "total-failure-session-count": 1,
    }
    assert entry["failure-details"] == [
        {
            "result-type": "certificate-host-mismatch",
            "sending-mta-ip": "198.51.100.1",
            "receiving-mx-hostname": "mx2.b.test",
            "receiving-ip": "192.0.2.2",
            "failed-session-count": 1,
        }
    ]


def test_failure_details_carry_the_helo_and_reason_when_known() -> None:
    recorder = TlsRecorder(clock=lambda: NOON)
    recorder.record(STS, Result.CERTIFICATE_EXPIRED, sending_ip="198.51.100.1",
                    receiving_mx="mx.b.test", receiving_ip="192.0.2.1",
                    receiving_helo="mx1.b.test", reason="certificate has expired")  # fmt: skip
    recorder.record(STS, Result.VALIDATION_FAILURE, receiving_mx="mx3.b.test")  # nothing known
    report = build_report("b.test", DAY, recorder.take(), organization="o", contact="c",
                          submitter="a.test")  # fmt: skip
    expired, other = report["policies"][0]["failure-details"]
    assert list(expired.items()) == [  # in this order: RFC 8460 4.4's
        ("result-type", "certificate-expired"),
        ("sending-mta-ip", "198.51.100.1"),
        ("receiving-mx-hostname", "mx.b.test"),
        ("receiving-ip", "192.0.2.1"),
        ("receiving-mx-helo", "mx1.b.test"),
        ("failure-reason-code", "certificate has expired"),
        ("failed-session-count", 1),
    ]
    assert other == {
        "result-type": "validation-failure",
        "receiving-mx-hostname": "mx3.b.test",
        "failed-session-count": 1,
    }
    assert json.loads(gzip.decompress(compressed(report))) == report


def test_no_policy_report_and_a_day_cut_short() -> None:
    report = build_report(
        "c.test", DAY, counts(), organization="o", contact="c", submitter="a.test", end=NOON
    )
    assert report["date-range"]["end-datetime"] == "2026-03-01T12:00:00Z"
    [entry] = report["policies"]
    assert entry["policy"] == {"policy-type": "no-policy-found", "policy-domain": "c.test"}
    assert "failure-details" not in entry
    assert json.loads(gzip.decompress(compressed(report))) == report
    assert file_name("a.test", "c.test", report) == "a.test!c.test!1772323200!1772366400.json.gz"


def test_report_mail_is_rfc_8460_section_5_3() -> None:
    report = build_report(
        "b.test", DAY, counts(), organization="o", contact="c", submitter="a.test"
    )
    data = compressed(report)
    message = report_message(
        queue_id="QID1",
        sender="noreply-tlsrpt@a.test",
        recipient="tls@b.test",
        submitter="a.test",
        domain="b.test",
        report=report,
        data=data,
        now=NOON,
    )
    assert str(message.envelope.sender) == "noreply-tlsrpt@a.test"
    [rcpt] = message.envelope.recipients
    assert str(rcpt.address) == "tls@b.test"
    raw = message.headers.encode() + b"\r\n" + b"".join(message.body.chunks())
    assert message.body.size == len(b"".join(message.body.chunks()))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["TLS-Report-Domain"] == "b.test"
    assert parsed["TLS-Report-Submitter"] == "a.test"
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "tlsrpt"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", MEDIA_TYPE]
    assert parts[1].get_filename() == file_name("a.test", "b.test", report)
    assert json.loads(gzip.decompress(parts[1].get_content())) == report


# ---- the HTTPS POST ---------------------------------------------------------------------------


class Loopback:
    async def host_addresses(self, host: str) -> list[MailHost]:
        return [MailHost(host, "127.0.0.1")]


def test_post_to_a_real_https_server(tmp_path: Path) -> None:
    import ssl

    with PolicyServer(tmp_path, "r.b.test") as server:
        context = ssl.create_default_context(cafile=str(server.cert))
        url = f"https://r.b.test:{server.port}/tlsrpt"
        status = asyncio.run(post_report(url, b"gz", resolver=Loopback(), context=context))
        assert status == 201
        assert server.posts == [(f"r.b.test:{server.port}", "/tlsrpt", MEDIA_TYPE, b"gz")]
        server.post_status = 500
        with pytest.raises(PostError, match="HTTP status 500"):
            asyncio.run(post_report(url, b"gz", resolver=Loopback(), context=context))
        untrusted = ssl.create_default_context()  # the test CA is not the system's
        with pytest.raises(PostError, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(post_report(url, b"gz", resolver=Loopback(), context=untrusted))
