"""Failure reports from the DMARC hook's side (``policy.dmarc_failures``): one message per
``ruf`` destination that may get it, queued in the background, at most one per policy
domain per interval. DNS answers come from a table (the daemon test uses dnsmasq)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from mailwright.core.dmarc import (
    Discovery,
    Evaluation,
    Identifier,
    PublicSuffixes,
    Result,
    parse_record,
)
from mailwright.core.dmarc_failure import FailureReport
from mailwright.core.headers import Header, HeaderList
from mailwright.policy.dmarc_failures import FailureReports
from mailwright.queue.store import NewMessage
from tests.unit.policy.test_dmarc_reports import Dns

RECORD = (
    "v=DMARC1; p=reject; ruf=mailto:f@example.com,mailto:f@agrees.test,"
    "mailto:f@stranger.test,mailto:tiny@example.com!10"
)


def report(domain: str = "example.com") -> FailureReport:
    found = Discovery(None, domain, parse_record(RECORD))
    return FailureReport(
        evaluation=Evaluation(Result.FAIL, domain, found),
        auth_failure="dmarc",
        queue_id="01QID",
        source_ip="192.0.2.7",
        envelope_from="",
        arrival=1_700_000_000.0,
        headers=HeaderList([Header.make("From", f"a@{domain}"), Header.make("Subject", "hi")]),
        auth_results=f"mx.test; dmarc=fail header.from={domain}",
        delivery_result="reject",
        dkim=(Identifier(domain, "fail", selector="s1"),),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_destinations_interval_and_the_queued_mail() -> None:
    queued: list[NewMessage] = []

    async def enqueue(message: NewMessage) -> None:
        queued.append(message)

    dns = Dns({"example.com._report._dmarc.agrees.test": ["v=DMARC1"]})
    clock = Clock()

    async def main() -> None:
        reports = FailureReports(
            "mx.test", "postmaster@mx.test", 3600.0, dns, PublicSuffixes.bundled(), enqueue,
            clock=clock,
        )  # type: ignore[arg-type]  # fmt: skip
        assert reports.submit(report())
        assert not reports.submit(report())  # within the hour
        assert not reports.submit(report("sub.example.com"))  # the same organization
        assert reports.submit(report("other.test"))  # another domain has its own
        await reports.drain()
        clock.now += 3600.0
        assert reports.submit(report())
        await reports.drain()

    asyncio.run(main())
    to = [str(m.envelope.recipients[0].address) for m in queued]
    assert to.count("f@example.com") == 2 and to.count("f@agrees.test") == 2
    assert "f@stranger.test" not in to and "tiny@example.com" not in to  # no consent, too big
    message = queued[0]
    assert str(message.envelope.sender) == "postmaster@mx.test"
    assert message.origin.protocol == "dmarc-failure-report"
    assert message.headers.get("Subject") is not None
    assert "example.com._report._dmarc.stranger.test" in dns.asked


def test_only_the_first_five_destinations() -> None:
    queued: list[NewMessage] = []

    async def enqueue(message: NewMessage) -> None:
        queued.append(message)

    many = ",".join(f"mailto:f{n}@example.com" for n in range(8))
    found = Discovery(None, "example.com", parse_record(f"v=DMARC1; p=reject; ruf={many}"))
    big = dataclasses.replace(report(), evaluation=Evaluation(Result.FAIL, "example.com", found))

    async def main() -> None:
        reports = FailureReports(
            "mx.test", "postmaster@mx.test", 0.0, Dns({}), PublicSuffixes.bundled(), enqueue
        )  # type: ignore[arg-type]
        assert reports.submit(big) and reports.submit(big)  # interval 0: every failure
        await reports.drain()

    asyncio.run(main())
    to = [str(m.envelope.recipients[0].address) for m in queued]
    assert to == [f"f{n}@example.com" for n in range(5)] * 2


def test_a_failing_destination_does_not_stop_the_next() -> None:
    queued: list[NewMessage] = []

    async def enqueue(message: NewMessage) -> None:
        if str(message.envelope.recipients[0].address).startswith("f0@"):
            raise OSError("the queue refused")
        queued.append(message)

    ruf = "mailto:f0@example.com,mailto:f1@example.com"
    found = Discovery(None, "example.com", parse_record(f"v=DMARC1; p=reject; ruf={ruf}"))
    two = dataclasses.replace(report(), evaluation=Evaluation(Result.FAIL, "example.com", found))

    async def main() -> None:
        reports = FailureReports(
            "mx.test", "postmaster@mx.test", 0.0, Dns({}), PublicSuffixes.bundled(), enqueue
        )  # type: ignore[arg-type]
        assert reports.submit(two)
        await reports.drain()

    asyncio.run(main())
    assert [str(m.envelope.recipients[0].address) for m in queued] == ["f1@example.com"]


def test_report_settings_without_dmarc_are_a_warning_of_config_check(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mailwright.cli.main import cli

    path = tmp_path / "mailwright.toml"
    base = 'hostname = "mx.test"\n[queue]\ndirectory = "q"\n[dmarc]\n'
    path.write_text(base + "failure_reports = true\nreports = true\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 0, result.stderr
    assert (
        "warning: dmarc.reports and dmarc.failure_reports do nothing while dmarc.enabled is"
        " false" in result.stderr
    )
    path.write_text(base + "enabled = true\nfailure_reports = true\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr


def test_the_interval_holds_across_the_workers_of_the_host() -> None:
    """Two workers' FailureReports over one real shared memory mapping: what worker 0 sent
    holds worker 1's report back, for the organization, until the window has passed."""
    from mailwright.policy.sharedlimits import SharedState

    queued: list[NewMessage] = []

    async def enqueue(message: NewMessage) -> None:
        queued.append(message)

    clock = Clock()
    state = SharedState.create(2, slots=64)
    dns = Dns({"example.com._report._dmarc.agrees.test": ["v=DMARC1"]})

    async def main() -> None:
        first, second = (
            FailureReports(
                "mx.test", "postmaster@mx.test", 600.0, dns, PublicSuffixes.bundled(), enqueue,
                share=state.worker(index, clock=clock),
            )  # type: ignore[arg-type]
            for index in (0, 1)
        )  # fmt: skip
        assert first.submit(report())
        assert not second.submit(report("sub.example.com"))  # worker 0's report holds it
        assert not first.submit(report())
        assert second.submit(report("other.test"))  # another organization
        clock.now += 599.0
        assert not second.submit(report())  # still within the interval
        clock.now += 600.0 / 6 + 2  # forgotten within 7/6 of the interval
        assert second.submit(report())
        await first.drain()
        await second.drain()

    asyncio.run(main())
    to = [str(m.envelope.recipients[0].address) for m in queued]
    assert to.count("f@example.com") == 2


def test_interval_zero_sends_every_report_even_with_shared_counters() -> None:
    from mailwright.policy.sharedlimits import SharedState

    queued: list[NewMessage] = []

    async def enqueue(message: NewMessage) -> None:
        queued.append(message)

    state = SharedState.create(2, slots=64)

    async def main() -> None:
        reports = FailureReports(
            "mx.test", "postmaster@mx.test", 0.0, Dns({}), PublicSuffixes.bundled(), enqueue,
            share=state.worker(0),
        )  # type: ignore[arg-type]  # fmt: skip
        assert reports.submit(report()) and reports.submit(report())
        await reports.drain()

    asyncio.run(main())
    assert [str(m.envelope.recipients[0].address) for m in queued].count("f@example.com") == 2
