"""SMTP TLS reporting in the daemon (RFC 8460): counts to the store, daily reports out.

Every process of the daemon counts its SMTP sessions in a ``routing.tlsrpt.TlsRecorder``
(the SMTP agent records into it) and adds the counts to the store
(``routing.tlsrpt_store``: ``tlsrpt.db`` or the shared database) every
``tls_reporting.flush_interval`` seconds and when it stops. The process that runs what
exists once (worker 0, or the only process) also sends the reports: once a UTC day has
ended (plus ``send_delay``, so that every process has flushed it), it claims the day in
the store (one process, one node: a lease) and, for each policy domain counted that day,
looks up ``_smtp._tls.<domain>`` TXT through our DNS resolver, builds the report
(``routing.tlsrpt_report``), queues it as mail to each ``mailto:`` address (through the
daemon's ``enqueue``, the normal queue) and POSTs it to each ``https:`` address. Then the
day's counts go. A domain without a record gets nothing; its counts go all the same.
A mailed report is DKIM-signed (RFC 8460 5.3: receivers ignore one without) with the key
of ``tls_reporting.dkim_*``, or else of the first ``dkim`` filter whose domains cover the
sender's domain; with neither it goes unsigned, and the log says so for each.

``report`` serves the control request ``tlsrpt`` and ``mailwright tlsrpt report``: a
dry run (the reports the next run would send, nothing sent or forgotten) or a run now,
of the due days or of one named day (today's: cut at this moment, and the day is done).

A store or DNS that fails is logged and the run is tried again at the next flush. A POST
refused or unreachable (logged, counted in ``mailwright_tlsrpt_reports_total{result=
"failed"}``) is kept in the store and tried again at the next flushes (RFC 8460 5.4) after
``tls_reporting.post_retry_interval``, doubling up to 4 hours, for up to a day after the
first attempt, then given up (logged); a process takes as many due ones as it can try
within its 15-minute hold on them. A mailed report goes through the queue like any mail,
retried as mail is. A record's first five addresses of each scheme get the report.

Settings read: ``tls_reporting.*``, ``hostname``, ``queue.*`` (the store),
``dns.*`` (the TXT lookups), ``delivery.tls_ca_file`` (the report servers' certificates),
``filters`` (a ``dkim`` filter's key, to sign reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mailwright.config.schema import PluginFilter, Settings
from mailwright.core.address import AddressError
from mailwright.core.dkim import Signer, SigningKey, load_signing_key
from mailwright.core.queueid import new_queue_id
from mailwright.delivery.tlspolicy import verify_context
from mailwright.observability import metrics
from mailwright.policy.filters.dkim import DkimOptions, covered, load_key
from mailwright.queue.lease import new_owner
from mailwright.queue.store import NewMessage
from mailwright.routing.mx import DnsResolver, resolver_from_settings, txt_string
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError
from mailwright.routing.tlsrpt import (
    RecordError,
    ReportAddresses,
    TlsRecorder,
    parse_record,
    utc_day,
)
from mailwright.routing.tlsrpt_report import (
    PostError,
    build_report,
    compressed,
    day_range,
    domains,
    post_report,
    report_message,
)
from mailwright.routing.tlsrpt_store import PendingPost, TlsReportStore, report_store

log = logging.getLogger("mailwright.tlsrpt")

LEASE = 3600.0  # seconds a claimed day is ours to send before another may take it over
RETRY_FOR = 86400.0  # RFC 8460 5.4: a failed POST is tried again for up to a day
MAX_RETRY_INTERVAL = 4 * 3600.0  # the back-off doubles up to this
POST_LEASE = 900.0  # seconds the due posts taken are this process's to try
MAX_ADDRESSES = 5  # of each scheme served per record: a record cannot make us a bulk sender
Enqueue = Callable[[NewMessage], Awaitable[None]]


# what a report's DKIM signature covers, and those signed once more than present
REPORT_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "TLS-Report-Domain",
    "TLS-Report-Submitter",
    "TLS-Required",
    "MIME-Version",
    "Content-Type",
)
REPORT_OVERSIGN = ("From", "To", "Subject", "Date", "Message-ID", "TLS-Report-Domain")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who we say we are in a report, and who signs it."""

    organization: str
    contact: str
    sender: str
    submitter: str  # our host name
    signer: Signer | None = None  # None: mailed reports go unsigned (and are ignored)

    @classmethod
    def from_settings(cls, settings: Settings) -> Identity:
        section, host = settings.tls_reporting, settings.hostname
        sender = section.sender or f"noreply-tlsrpt@{host}"
        return cls(
            organization=section.organization or host,
            contact=section.contact or f"postmaster@{host}",
            sender=sender,
            submitter=host,
            signer=report_signer(settings, sender.rpartition("@")[2].lower().rstrip(".")),
        )


def report_signer(settings: Settings, domain: str) -> Signer | None:
    """The DKIM signer of mailed reports from ``domain`` (RFC 8460 5.3): the key of
    ``tls_reporting.dkim_*``, else that of the first ``dkim`` filter whose domains cover
    ``domain``; None when there is neither, or when the key can no longer be read (it
    was when the settings were loaded: logged, and the reports go unsigned)."""
    section = settings.tls_reporting
    try:
        if section.dkim_key_file:
            key = load_signing_key(section.dkim_key_file, "DKIM")
            return _signer(section.dkim_domain or domain, section.dkim_selector, key)
        for entry in settings.filters:
            if isinstance(entry, PluginFilter) and entry.plugin == "dkim":
                options = DkimOptions.model_validate(entry.options)
                if covered(domain, options.signed_domains):
                    return _signer(options.domain, options.selector, load_key(options.key_file))
    except ValidationError as exc:  # a dkim filter's options (its key file)
        log.error("TLS reports: cannot sign them: %s", exc.errors()[0]["msg"])
    except ValueError as exc:
        log.error("TLS reports: cannot sign them: %s", exc)
    return None


def unsigned_warning(settings: Settings) -> str | None:
    """Why mailed reports would go unsigned with these settings (``mailwright config
    check`` and the daemon's start say it); None when they would be signed or are off."""
    if not settings.tls_reporting.enabled:
        return None
    identity = Identity.from_settings(settings)
    if identity.signer is not None:
        return None
    domain = identity.sender.rpartition("@")[2]
    return (
        "tls_reporting: mailed reports will not be DKIM-signed, and receivers ignore unsigned "
        "ones (RFC 8460 5.3): set tls_reporting.dkim_key_file and dkim_selector, or a dkim "
        f"filter whose domains cover {domain}"
    )


def _signer(domain: str, selector: str, key: SigningKey) -> Signer:
    return Signer(domain, selector, key, headers=REPORT_HEADERS, oversign=REPORT_OVERSIGN)


class TlsReporting:
    """Started after the queue writer, stopped before it (its last flush and run need it)."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        recorder: TlsRecorder | None,
        *,
        enqueue: Enqueue | None,
        sends: bool,
        store: TlsReportStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings  # the daemon's current ones (a SIGHUP may change them)
        self.recorder = recorder
        self.enqueue = enqueue  # None: reports can be shown, not mailed
        self.sends = sends  # this process sends the daily reports
        self.store = store or report_store(settings().queue)
        self._clock = clock
        self._owner = new_owner()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one run at a time (the loop's, a control request's)

    # ---- the loop -------------------------------------------------------------------------
    def start(self) -> None:
        if self.sends and (warning := unsigned_warning(self._settings())) is not None:
            log.warning("%s", warning)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings().tls_reporting.flush_interval)
            await self.flush()
            if self.sends and self._settings().tls_reporting.enabled:
                try:
                    await self.report()
                except Exception:  # the next round tries again
                    log.exception("TLS reports: the daily run failed")
                try:
                    await self.retry_posts()
                except Exception:  # the next round tries again
                    log.exception("TLS reports: retrying failed POSTs failed")

    async def flush(self) -> None:
        """Add this process's counts to the store (kept for the next flush if it fails)."""
        if self.recorder is None or not len(self.recorder):
            return
        counts = self.recorder.take()
        try:
            await asyncio.to_thread(self.store.add, counts)
        except Exception as exc:
            log.warning("TLS reports: cannot store %d session count(s): %s", len(counts), exc)
            self.recorder.give_back(counts)

    # ---- report runs ------------------------------------------------------------------------
    async def report(self, day: str | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
        """Send (or, ``dry_run``, show) the reports of ``day`` or of every day that is due;
        a summary per domain."""
        async with self._lock:
            await self.flush()
            now = self._clock()
            delay = self._settings().tls_reporting.send_delay
            if day is not None:
                days = [day]
            else:
                stored = await asyncio.to_thread(self.store.days)
                days = [d for d in stored if day_range(d)[1] + delay <= now]
                if dry_run and not days:  # nothing due: what today's would be so far
                    days = [utc_day(now)]
            out: list[dict[str, Any]] = []
            for one in days:
                end = now if one == utc_day(now) else None
                out += await self._day(one, end, dry_run)
            return out

    async def _day(self, day: str, end: float | None, dry_run: bool) -> list[dict[str, Any]]:
        if not dry_run:
            claim = self.store.claim
            claimed = await asyncio.to_thread(claim, day, self._owner, self._clock(), LEASE)
            if not claimed:
                log.info("TLS reports for %s: another process or node sends them", day)
                return []
        counts = await asyncio.to_thread(self.store.counts, day)
        identity = Identity.from_settings(self._settings())
        resolver, _ = resolver_from_settings(self._settings())
        dns = resolver if isinstance(resolver, DnsResolver) else None  # static: no TXT
        out = []
        for domain in domains(counts, day):
            report = build_report(
                domain,
                day,
                counts,
                organization=identity.organization,
                contact=identity.contact,
                submitter=identity.submitter,
                end=end,
            )
            summary: dict[str, Any] = {"domain": domain, "day": day, "report": report}
            addresses = await self._addresses(dns, domain)
            summary["rua"] = [] if addresses is None else [
                *(f"mailto:{a}" for a in addresses.mailto), *addresses.https
            ]  # fmt: skip
            if not dry_run:
                summary["sent"] = await self._send(domain, day, report, addresses, identity, dns)
            out.append(summary)
        if not dry_run:
            await asyncio.to_thread(self.store.finish, day, self._owner, self._clock())
            log.info("TLS reports for %s: %d domain(s)", day, len(out))
        return out

    async def _addresses(self, resolver: DnsResolver | None, domain: str) -> ReportAddresses | None:
        if resolver is None:
            return None
        try:
            texts = await resolver.records(f"_smtp._tls.{domain}", "TXT")
            return parse_record(txt_string(t) for t in texts)
        except (DnsTemporaryError, DnsPermanentError, RecordError) as exc:
            log.info("TLS reports: %s: no usable TLSRPT record: %s", domain, exc)
            return None

    async def _send(
        self,
        domain: str,
        day: str,
        report: dict[str, Any],
        addresses: ReportAddresses | None,
        identity: Identity,
        resolver: DnsResolver | None,
    ) -> list[str]:
        """Each address and what became of the report there."""
        if addresses is None or resolver is None:
            metrics.tlsrpt_report("no_record")
            return []
        section = self._settings().tls_reporting
        data = compressed(report)
        sent = []
        if len(addresses.mailto) > MAX_ADDRESSES or len(addresses.https) > MAX_ADDRESSES:
            log.info("TLS report for %s: the first %d addresses of each scheme get it",
                     domain, MAX_ADDRESSES)  # fmt: skip
        for address in addresses.mailto[:MAX_ADDRESSES]:
            result = await self._mail(domain, report, data, address, identity)
            metrics.tlsrpt_report(result)
            sent.append(f"mailto:{address} {result}")
        context = verify_context(self._settings().delivery.tls_ca_file)
        for url in addresses.https[:MAX_ADDRESSES]:
            try:
                await post_report(
                    url, data, resolver=resolver, context=context, timeout=section.post_timeout
                )
                result = "posted"
                log.info("TLS report for %s posted to %s", domain, url)
            except PostError as exc:
                result = "failed"
                now = self._clock()
                post = PendingPost(url, domain, day, data, now, now, 0)
                log.warning("TLS report for %s: %s%s", domain, exc, await self._later(post))
            metrics.tlsrpt_report(result)
            sent.append(f"{url} {result}")
        return sent

    # ---- failed POSTs (RFC 8460 5.4) ------------------------------------------------------
    async def retry_posts(self) -> int:
        """POST again the reports whose time has come; how many went."""
        section = self._settings().tls_reporting
        # as many as can be tried, one after the other, within the lease
        limit = max(1, int(POST_LEASE // (section.post_timeout + 5.0)))
        due = await asyncio.to_thread(self.store.take_due, self._clock(), POST_LEASE, limit)
        if not due:
            return 0  # the usual minute: no resolver built, nothing else read
        resolver, _ = resolver_from_settings(self._settings())
        if not isinstance(resolver, DnsResolver):  # static DNS: no POST was ever made
            return 0
        context = verify_context(self._settings().delivery.tls_ca_file)
        posted = 0
        for post in due:
            attempt = post.attempts + 1
            if self._clock() - post.first_attempt >= RETRY_FOR:
                await asyncio.to_thread(self.store.forget, post)
                log.warning("TLS report for %s of %s to %s: given up after %d attempts",
                            post.domain, post.day, post.url, post.attempts)  # fmt: skip
                continue
            try:
                await post_report(
                    post.url, post.data, resolver=resolver, context=context,
                    timeout=section.post_timeout,
                )  # fmt: skip
            except PostError as exc:
                metrics.tlsrpt_report("failed")
                log.warning("TLS report for %s of %s (attempt %d): %s%s",
                            post.domain, post.day, attempt, exc,
                            await self._later(post))  # fmt: skip
                continue
            await asyncio.to_thread(self.store.forget, post)
            metrics.tlsrpt_report("posted")
            posted += 1
            log.info("TLS report for %s of %s posted to %s (attempt %d)",
                     post.domain, post.day, post.url, attempt)  # fmt: skip
        return posted

    async def _later(self, post: PendingPost) -> str:
        """Keep a failed POST for another attempt, or give it up after a day; what the log
        line says of it."""
        now = self._clock()
        attempts = post.attempts + 1
        if now - post.first_attempt >= RETRY_FOR:
            await asyncio.to_thread(self.store.forget, post)
            return f"; given up after {attempts} attempts"
        first = self._settings().tls_reporting.post_retry_interval
        wait = min(first * 2 ** (attempts - 1), MAX_RETRY_INTERVAL)
        later = dataclasses.replace(post, next_attempt=now + wait, attempts=attempts)
        try:
            await asyncio.to_thread(self.store.retry_later, later)
        except Exception as exc:  # the store is away: this report is not retried
            return f"; cannot keep it for another attempt: {exc}"
        return f"; tried again in {wait:g}s"

    async def _mail(
        self, domain: str, report: dict[str, Any], data: bytes, to: str, identity: Identity
    ) -> str:
        if len(data) > self._settings().tls_reporting.max_report_size:
            log.warning("TLS report for %s to %s: %d octets, too large", domain, to, len(data))
            return "too_large"
        if self.enqueue is None:
            return "failed"
        try:
            message = report_message(
                queue_id=new_queue_id(),
                sender=identity.sender,
                recipient=to,
                submitter=identity.submitter,
                domain=domain,
                report=report,
                data=data,
                now=self._clock(),
                signer=identity.signer,
            )
        except AddressError as exc:
            log.warning("TLS report for %s: bad address %r: %s", domain, to, exc)
            return "failed"
        await self.enqueue(message)
        if identity.signer is None:
            log.warning(
                "%s: TLS report for %s to <%s> not DKIM-signed (RFC 8460 5.3: receivers ignore"
                " it): set tls_reporting.dkim_key_file, or a dkim filter for %s",
                message.queue_id,
                domain,
                to,
                identity.sender.rpartition("@")[2],
            )
        else:
            signer = identity.signer
            log.info(
                "%s: TLS report for %s to <%s>, DKIM signed d=%s s=%s",
                message.queue_id,
                domain,
                to,
                signer.domain,
                signer.selector,
            )
        return "queued"

    # ---- the control request ------------------------------------------------------------
    async def control(self, request: dict[str, object]) -> dict[str, object]:
        """``{"op": "tlsrpt", "day": "YYYY-MM-DD" | null, "dry_run": bool}``."""
        day = request.get("day")
        if day is not None and not (isinstance(day, str) and _is_day(day)):
            return {"ok": False, "error": f"day must be YYYY-MM-DD, not {day!r}"}
        if not self.sends:
            return {"ok": False, "error": "this process does not send TLS reports"}
        try:
            reports = await self.report(day, dry_run=bool(request.get("dry_run")))
        except Exception as exc:
            log.exception("TLS reports: the run failed")
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "reports": reports}


def _is_day(text: str) -> bool:
    try:
        time.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True
