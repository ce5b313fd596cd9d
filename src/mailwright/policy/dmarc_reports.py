"""DMARC aggregate reports (RFC 7489 7.2): once per period, one report per policy domain.

``ReportRun.due(now)`` is called by the daemon's worker 0 (``daemon/app.py``) after each
period boundary (``dmarc.report_interval``, 1 day by default: periods are UTC days). It
claims the period that just ended in the store (``policy.dmarc_store``; with several
nodes on PostgreSQL only the first claim sends), reads its rows, builds one report per
policy domain (``core.dmarc_report``: Appendix C XML, gzip) and returns the mail to
queue, one message per ``rua=mailto:`` destination that may get it
(``policy.dmarc_destinations``: in the policy domain's organizational domain or agreeing
to get them, 7.1; within the URI's ``!`` size limit, compared with the gzip file).

Rows of the period (and older ones) are then deleted. ``ReportRun.plan(now)`` is the
same without claiming, sending or deleting, for the period in progress
(``mailwright dmarc report --dry-run``).

The reports come from ``dmarc.report_from`` (default ``postmaster@<hostname>``), the
org_name is ``dmarc.report_org_name`` (default the hostname). Trusts the stored rows
(ours) and nothing from DNS beyond the TXT check. Settings: ``dmarc.*``, ``hostname``,
``queue.*`` (the store), ``dns.*``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailwright.config.schema import Settings
from mailwright.core.dmarc import PublicSuffixes
from mailwright.core.dmarc_report import Destination, Report, aggregate
from mailwright.policy import dmarc_destinations as destinations
from mailwright.policy.dmarc import load_suffixes
from mailwright.policy.dmarc_store import ReportStore, report_store
from mailwright.queue.store import NewMessage
from mailwright.routing.mx import DnsResolver

log = logging.getLogger("mailwright.policy.dmarc_reports")

PROTOCOL = "dmarc-report"  # the origin of the report mail, in the log
Enqueue = Callable[[NewMessage], Awaitable[None]]  # the daemon's, which queues and wakes


@dataclass(slots=True)
class Planned:
    """One report and what becomes of each destination."""

    report: Report
    data: bytes  # the gzip file
    sent: list[Destination] = field(default_factory=list)
    skipped: list[tuple[Destination, str]] = field(default_factory=list)  # and why


class ReportRun:
    def __init__(
        self,
        settings: Settings,
        store: ReportStore,
        resolver: DnsResolver,
        suffixes: PublicSuffixes,
    ) -> None:
        section = settings.dmarc
        self.interval = section.report_interval
        self.receiver = settings.hostname
        self.org_name = section.report_org_name or settings.hostname
        self.sender = section.report_from or f"postmaster@{settings.hostname}"
        self.store = store
        self.resolver = resolver
        self.suffixes = suffixes

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportRun:
        return cls(
            settings,
            report_store(settings.queue),
            DnsResolver.from_settings(settings.dns),
            load_suffixes(settings),
        )

    def period_end(self, now: float) -> float:
        """The end of the last complete period (periods are multiples of the interval)."""
        return math.floor(now / self.interval) * self.interval

    def next_run(self, now: float) -> float:
        """When the period in progress has ended, with a little grace for the rows of
        messages being accepted at the boundary."""
        grace = min(max(self.interval / 100, 0.5), 300.0)
        return self.period_end(now) + self.interval + grace

    async def due(self, now: float) -> list[NewMessage]:
        """The mail of the period that ended last, if no one sent it yet."""
        end = self.period_end(now)
        if not await asyncio.to_thread(self.store.claim, end):
            return []
        planned = await self.plan_period(end - self.interval, end)
        await asyncio.to_thread(self.store.purge, end)
        messages = []
        for plan in planned:
            for destination, why in plan.skipped:
                log.info(
                    "dmarc report for %s: not sent to %s: %s",
                    plan.report.policy_domain, destination.address, why,
                )  # fmt: skip
            messages += [self.message(plan, d, now) for d in plan.sent]
        return messages

    async def plan(self, now: float) -> list[Planned]:
        """The reports of the period in progress, as they stand (the dry run)."""
        end = self.period_end(now)
        return await self.plan_period(end, now)

    async def plan_period(self, begin: float, end: float) -> list[Planned]:
        rows = await asyncio.to_thread(self.store.rows, begin, end)
        reports = aggregate(
            rows, int(begin), int(end) - 1, org_name=self.org_name, email=self.sender
        )
        planned = []
        for report in reports:
            plan = Planned(report, report.gzip())
            for destination in report.destinations:
                why = await self.refusal(report, destination, len(plan.data))
                if why:
                    plan.skipped.append((destination, why))
                else:
                    plan.sent.append(destination)
            planned.append(plan)
        return planned

    async def refusal(self, report: Report, destination: Destination, size: int) -> str:
        """Why a destination does not get the report, or ""."""
        return await destinations.refusal(
            self.resolver,
            self.suffixes,
            report.policy_domain,
            destination.address,
            destination.limit,
            size,
        )

    def message(self, plan: Planned, destination: Destination, now: float) -> NewMessage:
        fields, body = plan.report.mail(
            self.receiver, self.sender, destination.address, plan.data, now
        )
        return destinations.message(self.sender, destination.address, fields, body, now, PROTOCOL)


async def run_forever(settings: Settings, enqueue: Enqueue, stop: asyncio.Event) -> None:
    """Send each period's reports after it ends, until ``stop`` is set (worker 0)."""
    run = ReportRun.from_settings(settings)
    while not stop.is_set():
        wait = run.next_run(time.time()) - time.time()
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.0))
            return
        except TimeoutError:
            pass
        try:
            messages = await run.due(time.time())
            for message in messages:
                await enqueue(message)
            if messages:
                log.info("dmarc: %d aggregate report(s) queued", len(messages))
        except Exception:  # a failed run is logged; the next period tries again
            log.exception("dmarc: the aggregate report run failed")
