"""DMARC failure reports (RFC 7489 7.3) sent from the DMARC hook, in the background.

``FailureReports.submit`` takes a ``core.dmarc_failure.FailureReport`` at end of data
and returns at once (the SMTP reply never waits for it); a task then queues one message
per ``ruf=mailto:`` destination that may get it (``policy.dmarc_destinations``: the
policy domain's own organization, or a third party that agreed, 7.1; within its ``!``
size limit), through the daemon's ``enqueue``, as any mail, from ``dmarc.report_from``.

A policy domain's organization gets at most one report per
``dmarc.failure_report_interval`` from the host (0: one per failing message): with several
worker processes the reports are counted in a shared window of ``policy.sharedlimits``
(forgotten between one and 7/6 intervals after: the safe side), one process counts them
in a ``policy.limits.SlidingCounter`` of its own. At most 100 are in flight
per process, so a flood of forged mail is not echoed as a flood of reports;
only the first five ``ruf`` addresses are served (a record cannot turn us into a bulk
mailer). Reports are advisory: a failure to build or queue one is logged, never the
message's concern, nor the next address's.

Trusts the outcome and the header section the hook hands over. Settings (via
``from_settings``): ``dmarc.failure_report_interval``, ``dmarc.report_from``,
``hostname``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from mailwright.config.schema import Settings
from mailwright.core.dmarc import PublicSuffixes
from mailwright.core.dmarc_failure import FailureReport
from mailwright.policy import dmarc_destinations as destinations
from mailwright.policy.limits import SlidingCounter
from mailwright.policy.sharedlimits import WindowCounter, WorkerShare
from mailwright.queue.store import NewMessage
from mailwright.routing.mx import DnsResolver

log = logging.getLogger("mailwright.policy.dmarc")

PROTOCOL = "dmarc-failure-report"  # the origin of the report mail, in the log
MAX_REMEMBERED = 10_000  # organizational domains whose last report time is kept
MAX_IN_FLIGHT = 100  # reports being looked up and queued at once; more are dropped
MAX_DESTINATIONS = 5  # ruf addresses served per report: a record cannot make us a mailer
Enqueue = Callable[[NewMessage], Awaitable[None]]
SHARED_WINDOW = "dmarc_failure_reports"  # the window of ``policy.sharedlimits`` it counts in


class FailureReports:
    def __init__(
        self,
        hostname: str,
        sender: str,
        interval: float,
        resolver: DnsResolver,
        suffixes: PublicSuffixes,
        enqueue: Enqueue,
        clock: Callable[[], float] = time.monotonic,
        share: WorkerShare | None = None,
    ) -> None:
        """``share``: the worker processes' shared counters (None: one process)."""
        self.hostname = hostname
        self.sender = sender
        self.interval = interval
        self.resolver = resolver
        self.suffixes = suffixes
        self.enqueue = enqueue
        # the reports of the last interval per organization: the workers' shared window, or
        # this process's own (the same interface); None: every failure is reported
        self._sent: WindowCounter | SlidingCounter | None = None
        if interval > 0 and share is not None:
            self._sent = share.window(SHARED_WINDOW, interval)
        elif interval > 0:
            self._sent = SlidingCounter(interval, 1, MAX_REMEMBERED, clock)
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        resolver: DnsResolver,
        suffixes: PublicSuffixes,
        enqueue: Enqueue,
        share: WorkerShare | None = None,
    ) -> FailureReports:
        section = settings.dmarc
        sender = section.report_from or f"postmaster@{settings.hostname}"
        interval = section.failure_report_interval
        return cls(settings.hostname, sender, interval, resolver, suffixes, enqueue, share=share)

    def submit(self, report: FailureReport) -> bool:
        """Send ``report`` in the background; False when the domain's organization had one
        too recently (subdomains count as their organization: a wildcard record must not
        make each forged subdomain a policy domain of its own) or too many are in flight."""
        domain = report.evaluation.policy_domain
        if len(self._tasks) >= MAX_IN_FLIGHT:
            log.info("%s: dmarc: no failure report for %s: %d being sent",
                     report.queue_id, domain, len(self._tasks))  # fmt: skip
            return False
        if (sent := self._sent) is not None:
            organization = self.suffixes.org_domain(domain)
            if sent.count(organization):  # two workers at the same instant may both go on
                log.info("%s: dmarc: no failure report for %s: one went within %gs",
                         report.queue_id, domain, self.interval)  # fmt: skip
                return False
            sent.add(organization)
        task = asyncio.create_task(self._send(report))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        """Wait for the reports in flight (tests; a stopping daemon)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _send(self, report: FailureReport) -> None:
        record = report.evaluation.record
        assert record is not None
        domain = report.evaluation.policy_domain
        if len(record.ruf) > MAX_DESTINATIONS:
            log.info("%s: dmarc: %s lists %d ruf addresses: the first %d get the report",
                     report.queue_id, domain, len(record.ruf), MAX_DESTINATIONS)  # fmt: skip
        for uri in record.ruf[:MAX_DESTINATIONS]:
            try:
                await self._send_to(report, uri.address, uri.limit)
            except Exception:  # advisory: never the message's concern, nor the next address's
                log.exception("%s: dmarc: failure report for %s to %s failed",
                              report.queue_id, domain, uri.address)  # fmt: skip

    async def _send_to(self, report: FailureReport, address: str, limit: int | None) -> None:
        domain = report.evaluation.policy_domain
        now = time.time()
        fields, body = report.mail(self.hostname, self.sender, address, now)
        why = await destinations.refusal(
            self.resolver, self.suffixes, domain, address, limit, len(body)
        )
        if why:
            log.info("%s: dmarc: failure report for %s not sent to %s: %s",
                     report.queue_id, domain, address, why)  # fmt: skip
            return
        message = destinations.message(self.sender, address, fields, body, now, PROTOCOL)
        await self.enqueue(message)
        log.info("%s: dmarc: failure report for %s (%s) queued as %s to <%s>",
                 report.queue_id, domain, report.auth_failure, message.queue_id,
                 address)  # fmt: skip
