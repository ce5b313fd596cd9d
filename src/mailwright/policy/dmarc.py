"""DMARC (RFC 7489) of inbound mail at end of data: evaluate, then refuse, hold or mark.

The hook runs after the filters (so after ``dkim_verify``) for each message from a
client that is not exempt. It takes the RFC5322.From domain(s) (``core.dmarc``
``author_domains``: several From fields, or an address without a domain, is refused
with ``550 5.7.1`` under ``dmarc.malformed_from = "refuse"``, else marked
``permerror``; a From with several addresses is evaluated per domain and the
strictest outcome applies, 6.6.1), looks up the policy (``_dmarc.<domain>``, then the
organizational domain's, from the Public Suffix List ``dmarc.psl_file`` or
``<queue.directory>/public_suffix_list.dat`` or the ``publicsuffixlist`` package's)
and aligns the SPF result of MAIL FROM (``policy.spf``'s, ``txn.spf_identity``) and
the DKIM results (``dkim_verify``'s, ``txn.dkim_results``) with it. Without those
checks in the pipeline for the message, DMARC runs them itself (SPF of MAIL FROM,
DKIM verification; the ``dkim=`` results then go in the header too).

What a failing message's policy does is a setting: ``dmarc.reject`` and
``dmarc.quarantine`` are ``refuse`` (``550 5.7.1``), ``hold`` (accepted, kept on
hold in the queue) or ``mark``. A ``temperror`` (DNS trouble) where the policy would
refuse or hold answers ``451 4.7.1`` under ``dmarc.temperror = "refuse"``: DNS
trouble never loses mail. Every evaluated message gets ``dmarc=<result> (p=... dis=...)
header.from=<domain>`` in our ``Authentication-Results:`` (``core.authresults``),
``dmarc=<result>`` in its mail log line, a count in
``mailwright_dmarc_results_total``; refusals, holds and temperrors are logged by
``mailwright.policy.dmarc``. A message whose policy domain asks for aggregate reports
(``rua``) is recorded for them when ``dmarc.reports`` is on (``policy.dmarc_reports``);
one whose ``fo=`` asks for a failure report (``ruf``) gets one, with
``dmarc.failure_reports`` on, queued in the background (``policy.dmarc_failures``).

Never checked: local submission, clients trusted to relay, authenticated clients,
listeners other than ``smtp`` kind, clients in ``dmarc.allow``.

Trusts nothing from DNS or the message (``core.dmarc`` checks every tag). Settings:
``dmarc.*``, ``hostname``, ``queue.directory`` (the PSL file, the report store),
``dns.*``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from mailwright.config.schema import DmarcAction, DmarcSection, Settings, SpfAction
from mailwright.core import authresults
from mailwright.core import dkim_verify as dkimv
from mailwright.core.dmarc import (
    Discovery,
    Disposition,
    Evaluation,
    FromError,
    Identifier,
    PublicSuffixes,
    Result,
    TempError,
    author_domains,
    discover,
    evaluate,
    resinfo,
)
from mailwright.core.dmarc_failure import FailureReport, auth_failure
from mailwright.core.dmarc_report import Row
from mailwright.core.reply import Reply
from mailwright.core.spf import Result as SpfResult
from mailwright.core.spf import check_host, run_async
from mailwright.observability import metrics
from mailwright.policy.dmarc_failures import Enqueue, FailureReports
from mailwright.policy.dmarc_store import ReportStore, report_store
from mailwright.policy.hooks import Hook, SessionInfo, Transaction
from mailwright.policy.relay import Network, parse_networks, unchecked
from mailwright.policy.sharedlimits import WorkerShare
from mailwright.policy.spf import DnsLookup
from mailwright.routing.mx import DnsResolver, txt_string
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError

log = logging.getLogger("mailwright.policy.dmarc")

PSL_NAME = "public_suffix_list.dat"
_SEVERITY = {Disposition.NONE: 0, Disposition.QUARANTINE: 1, Disposition.REJECT: 2}


def psl_path(settings: Settings) -> Path:
    """Where the operator's Public Suffix List is (``mailwright dmarc update-psl``)."""
    return settings.dmarc.psl_file or settings.queue.directory / PSL_NAME


def load_suffixes(settings: Settings) -> PublicSuffixes:
    """The operator's list when there is one, else the package's."""
    path = psl_path(settings)
    if settings.dmarc.psl_file is not None or path.exists():
        try:  # a configured file must be there and valid
            return PublicSuffixes.from_file(path)
        except (OSError, UnicodeError, ValueError) as exc:
            raise ValueError(f"dmarc: Public Suffix List {path}: {exc}") from None
    return PublicSuffixes.bundled()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What was done: the disposition applied (for the header and reports), the reply."""

    applied: Disposition
    reply: Reply | None = None
    hold: bool = False
    overridden: bool = False  # our action differs from what the domain asked


class DmarcPolicy(Hook):
    name = "dmarc"

    def __init__(
        self,
        section: DmarcSection,
        hostname: str,
        resolver: DnsResolver,
        suffixes: PublicSuffixes,
        *,
        store: ReportStore | None = None,
        rng: random.Random | None = None,
        failures: FailureReports | None = None,
    ) -> None:
        self.section = section
        self.hostname = hostname
        self.authserv_id = section.authserv_id or hostname
        self.resolver = resolver
        self.suffixes = suffixes
        self.store = store
        self.failures = failures  # failure reports (ruf=), when dmarc.failure_reports
        self.rng = rng or random.Random()
        self.allow: list[Network] = parse_networks(section.allow)

    def exempt(self, session: SessionInfo) -> bool:
        return unchecked(session, self.allow)

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        if self.exempt(session) or txn.headers is None:
            return None
        lines = txn.auth_results.setdefault(self.authserv_id, [])
        ours = 1 if lines else 0
        try:
            domains = author_domains(txn.headers)
        except FromError as exc:
            return self._malformed(session, txn, lines, ours, str(exc))
        if not domains:
            lines.append('dmarc=none reason="no From field"')
            self._finish(txn, lines, ours, Result.NONE)
            return None
        spf = await self._spf(session, txn)
        dkim = await self._dkim(txn, lines)
        evaluations = [await self._evaluate(d, spf, dkim) for d in domains]
        chosen = max(evaluations, key=_strictness)
        verdict = self.verdict(chosen)
        lines.append(resinfo(chosen, verdict.applied))
        self._finish(txn, lines, ours, chosen.result)
        if verdict.hold:
            txn.hold_reason = f"DMARC {chosen.result}: {chosen.author_domain} asks to quarantine"
        if verdict.reply is not None or verdict.hold or chosen.result is Result.TEMPERROR:
            log.info(
                "%s: dmarc: [%s] header.from=%s %s%s: %s",
                txn.queue_id,
                session.client_address,
                chosen.author_domain,
                chosen.result,
                f" ({chosen.discovery.problem})" if chosen.discovery.problem else "",
                verdict.reply or ("held" if verdict.hold else "accepted (marked)"),
            )
        await self._record(session, txn, chosen, verdict, spf, dkim)
        self._report_failure(session, txn, chosen, verdict, spf, dkim, lines)
        return verdict.reply

    # ---- the identifiers
    async def _spf(self, session: SessionInfo, txn: Transaction) -> Identifier | None:
        """The SPF identity policy.spf checked, else checked here (MAIL FROM, or HELO for
        the null sender), for alignment only."""
        if txn.spf_identity is not None:
            domain, scope, result = txn.spf_identity
            return Identifier(domain, result, scope=scope)
        sender = str(txn.sender) if txn.sender is not None else ""
        domain = sender.rpartition("@")[2] if sender else session.helo
        if not domain:
            return None
        evaluation = check_host(
            session.client_address, domain, sender, session.helo,
            receiver=self.hostname, now=int(time.time()),
        )  # fmt: skip
        try:
            async with asyncio.timeout(self.section.timeout):
                outcome = await run_async(evaluation, DnsLookup(self.resolver))
            result = str(outcome.result)
        except TimeoutError:
            result = str(SpfResult.TEMPERROR)
        lines = txn.auth_results.setdefault(self.authserv_id, [])
        prop = (
            f"smtp.mailfrom={authresults.address_value(sender)}"
            if sender
            else (f"smtp.helo={authresults.value(domain)}")
        )
        lines.append(f"spf={result} {prop}")
        return Identifier(domain.lower(), result, scope="mfrom" if sender else "helo")

    async def _dkim(self, txn: Transaction, lines: list[str]) -> list[Identifier]:
        """The DKIM results dkim_verify gave, else verified here (added to the header)."""
        results = txn.dkim_results
        if results is None and txn.body is not None and txn.headers is not None:
            plan = dkimv.Plan.of(txn.headers)
            hashes = await asyncio.to_thread(dkimv.body_hashes, txn.body.chunks(), plan.body_specs)
            found = await plan.verify(txn.headers, hashes, self._key_lookup, int(time.time()))
            results = txn.dkim_results = list(found)
            lines.extend(dkimv.result_text(r) for r in found)
        return [
            Identifier(r.domain.lower(), r.result, selector=r.selector)
            for r in results or ()
            if r.domain
        ]

    async def _key_lookup(self, name: str) -> list[str]:
        try:
            async with asyncio.timeout(self.section.timeout):
                return [txt_string(r) for r in await self.resolver.records(name, "TXT")]
        except (TimeoutError, DnsTemporaryError):
            raise dkimv.TempError(f"key lookup {name} failed") from None

    async def _txt(self, name: str) -> list[str]:
        try:
            return [txt_string(r) for r in await self.resolver.records(name, "TXT")]
        except DnsTemporaryError as exc:
            raise TempError(f"{name}: {exc}") from None
        except DnsPermanentError:
            return []

    async def _evaluate(
        self, domain: str, spf: Identifier | None, dkim: list[Identifier]
    ) -> Evaluation:
        org = self.suffixes.org_domain(domain)
        try:
            async with asyncio.timeout(self.section.timeout):
                found = await discover(domain, org, self._txt)
        except TimeoutError:
            why = f"no answer within {self.section.timeout:g} s"
            found = Discovery(Result.TEMPERROR, domain, problem=why)
        return evaluate(domain, found, spf, dkim, self.suffixes, self.rng)

    def _report_failure(
        self,
        session: SessionInfo,
        txn: Transaction,
        evaluation: Evaluation,
        verdict: Verdict,
        spf: Identifier | None,
        dkim: list[Identifier],
        lines: list[str],
    ) -> None:
        """A failure report to the domain's ``ruf`` addresses, when its ``fo`` asks; never
        about a REQUIRETLS message (its header section must not travel in the clear)."""
        if self.failures is None or txn.headers is None:
            return
        failed = auth_failure(evaluation, spf, dkim)
        if failed is None:
            return
        if txn.params.requiretls:
            log.info("%s: dmarc: no failure report for %s: the message asked for REQUIRETLS",
                     txn.queue_id, evaluation.policy_domain)  # fmt: skip
            return
        report = FailureReport(
            evaluation=evaluation,
            auth_failure=failed,
            queue_id=txn.queue_id,
            envelope_id=txn.params.envid,
            source_ip=session.client_address,
            envelope_from=str(txn.sender) if txn.sender is not None else "",
            arrival=time.time(),
            headers=txn.headers,
            auth_results="; ".join([self.authserv_id, *lines]),
            delivery_result=_delivery_result(verdict),
            dkim=tuple(dkim),
        )
        self.failures.submit(report)

    # ---- what an outcome does
    def verdict(self, evaluation: Evaluation) -> Verdict:
        """The disposition applied and the reply, from the outcome and the settings."""
        result, asked = evaluation.result, evaluation.disposition
        section = self.section
        if result is Result.TEMPERROR and evaluation.record is None:
            # the policy is unknown: defer when told to, as if it could be reject
            if section.temperror is SpfAction.REFUSE:
                return Verdict(Disposition.NONE, _temp_reply(evaluation))
            return Verdict(Disposition.NONE)
        if result not in (Result.FAIL, Result.TEMPERROR) or asked is Disposition.NONE:
            return Verdict(Disposition.NONE)
        action = section.reject if asked is Disposition.REJECT else section.quarantine
        if result is Result.TEMPERROR and action is not DmarcAction.MARK:
            if section.temperror is SpfAction.REFUSE:
                return Verdict(Disposition.NONE, _temp_reply(evaluation))
            action = DmarcAction.MARK
        if action is DmarcAction.REFUSE:
            text = f"DMARC policy of {evaluation.policy_domain} refuses this message from "
            reply = Reply.of(550, "5.7.1", text + evaluation.author_domain)
            return Verdict(Disposition.REJECT, reply, overridden=asked is not Disposition.REJECT)
        if action is DmarcAction.HOLD:
            overridden = asked is not Disposition.QUARANTINE
            return Verdict(Disposition.QUARANTINE, hold=True, overridden=overridden)
        return Verdict(Disposition.NONE, overridden=True)

    def _malformed(
        self, session: SessionInfo, txn: Transaction, lines: list[str], ours: int, why: str
    ) -> Reply | None:
        lines.append(f"dmarc=permerror reason={authresults.value(why)}")
        self._finish(txn, lines, ours, Result.PERMERROR)
        reply = None
        if self.section.malformed_from is SpfAction.REFUSE:
            reply = Reply.of(550, "5.7.1", f"DMARC: the author of this message is unclear: {why}")
        log.info(
            "%s: dmarc: [%s] %s: %s",
            txn.queue_id, session.client_address, why, reply or "accepted (marked)",
        )  # fmt: skip
        return reply

    def _finish(self, txn: Transaction, lines: list[str], ours: int, result: Result) -> None:
        assert txn.headers is not None
        forged = authresults.write(txn.headers, self.authserv_id, lines) - ours
        if forged:
            log.info("%s: dmarc: removed %d forged Authentication-Results", txn.queue_id, forged)
        txn.log_fields["dmarc"] = str(result)
        metrics.dmarc_result(str(result))

    async def _record(
        self,
        session: SessionInfo,
        txn: Transaction,
        evaluation: Evaluation,
        verdict: Verdict,
        spf: Identifier | None,
        dkim: list[Identifier],
    ) -> None:
        """Keep the outcome for the aggregate report of a domain that asks for one."""
        record = evaluation.record
        if self.store is None or record is None or not record.rua:
            return
        reasons = []
        if evaluation.sampled_out:
            reasons.append("sampled_out")
        if verdict.overridden:
            reasons.append("local_policy")
        row = Row.make(
            at=time.time(),
            evaluation=evaluation,
            source_ip=session.client_address,
            envelope_from=str(txn.sender.domain) if txn.sender is not None else "",
            disposition=verdict.applied,
            reasons=tuple(reasons),
            spf=spf,
            dkim=dkim,
        )
        try:
            await asyncio.to_thread(self.store.add, row)
        except Exception as exc:  # a report row is never worth a message
            log.warning("%s: dmarc: could not record for reports: %s", txn.queue_id, exc)


def _delivery_result(verdict: Verdict) -> str:
    """RFC 6591 Delivery-Result of what was done with the message."""
    if verdict.reply is not None:
        return "reject"
    return "policy" if verdict.hold else "delivered"


def _temp_reply(evaluation: Evaluation) -> Reply:
    return Reply.of(
        451, "4.7.1", f"DMARC: temporary DNS error checking {evaluation.author_domain}, try later"
    )


def _strictness(evaluation: Evaluation) -> tuple[int, int]:
    """Failing outcomes before the others, the strictest policy first (6.6.1)."""
    failing = evaluation.result in (Result.FAIL, Result.TEMPERROR)
    return (int(failing), _SEVERITY[evaluation.disposition] if failing else 0)


def idle_reports_warning(settings: Settings) -> str | None:
    """Report settings that do nothing because DMARC itself is off (``mailwright config
    check`` and the daemon's start say it); None otherwise."""
    section = settings.dmarc
    asked = [name for name in ("reports", "failure_reports") if getattr(section, name)]
    if section.enabled or not asked:
        return None
    names = " and ".join(f"dmarc.{name}" for name in asked)
    return f"{names} do nothing while dmarc.enabled is false (no message is evaluated)"


def from_settings(
    settings: Settings, enqueue: Enqueue | None = None, share: WorkerShare | None = None
) -> DmarcPolicy | None:
    """The hook for ``[dmarc]``, or None when it is off (the default); ``enqueue`` queues
    the failure reports (none without it); ``share``: the worker processes' counters, in
    which the failure reports' interval holds for the host (None: one process)."""
    section = settings.dmarc
    if not section.enabled:
        return None
    store = report_store(settings.queue) if section.reports else None
    resolver = DnsResolver.from_settings(settings.dns)
    suffixes = load_suffixes(settings)
    failures = None
    if section.failure_reports and enqueue is not None:
        failures = FailureReports.from_settings(settings, resolver, suffixes, enqueue, share)
    return DmarcPolicy(
        section, settings.hostname, resolver, suffixes, store=store, failures=failures
    )
