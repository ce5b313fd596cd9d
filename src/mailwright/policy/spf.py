"""SPF (RFC 7208) of inbound mail: check MAIL FROM and HELO, refuse or mark per result.

At MAIL the hook runs ``core.spf.check_host`` for the sender's domain (for a null
sender, the HELO identity ``postmaster@<helo>``) and, with ``spf.helo``, for the HELO
name, over the daemon's resolver (``dns.*``), the whole check bounded by
``spf.timeout`` (then ``temperror``). What a result does is a setting per result:
``refuse`` answers ``550 5.7.23`` (fail, softfail; the explanation of ``exp=`` in
the text), ``550 5.7.24`` (permerror) or ``451 4.7.24`` (temperror: DNS trouble
defers, it never loses mail), at RCPT (``spf.stage = "rcpt"``, the default, so the
sender hears it per recipient and postmaster can still be written to) or at MAIL;
``mark`` accepts. A HELO ``fail`` counts as the sender's fail (RFC 7208 2.3).
Every accepted message of a checked client gets ``Received-SPF:`` (RFC 7208 9.1, one
per identity checked) and ``spf=<result> smtp.mailfrom=<sender>`` (and
``smtp.helo=``) in our ``Authentication-Results:`` field, which ``dkim_verify``
extends (``core.authresults``: one field per authserv-id; forged ones removed). The
result is in the message's mail log line (``spf=``), every refusal and temperror is
logged, and each checked transaction counts in ``mailwright_spf_results_total``.

Never checked: local submission, clients trusted to relay (loopback,
``relay.networks``, an access ``Connect:`` RELAY), authenticated clients, listeners
other than ``smtp`` kind, and clients in ``spf.allow``.

Trusts nothing from DNS or the client (``core.spf`` checks every record; header
values are quoted). Settings: ``spf.*``, ``hostname`` (receiver, default
authserv-id), ``dns.*``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from mailwright.config.schema import Settings, SpfAction, SpfSection, SpfStage
from mailwright.core import authresults
from mailwright.core.envelope import Recipient
from mailwright.core.headers import Header
from mailwright.core.reply import Reply
from mailwright.core.spf import (
    Answer,
    Outcome,
    Query,
    Result,
    check_host,
    received_spf,
    run_async,
    valid_domain,
)
from mailwright.observability import metrics
from mailwright.policy.hooks import Hook, SessionInfo, Transaction
from mailwright.policy.relay import Network, parse_networks, unchecked
from mailwright.routing.mx import DnsResolver, txt_string
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError

log = logging.getLogger("mailwright.policy.spf")


@dataclass(frozen=True, slots=True)
class Check:
    """One identity checked: which, its name, and the outcome."""

    identity: str  # "mailfrom" or "helo"
    sender: str  # the MAIL FROM address, or "" for the HELO identity
    outcome: Outcome


class DnsLookup:
    """``core.spf`` questions answered by the daemon's resolver."""

    def __init__(self, resolver: DnsResolver) -> None:
        self.resolver = resolver

    async def __call__(self, query: Query) -> Answer:
        try:
            records = await self.resolver.records(query.name, query.rdtype)
        except DnsTemporaryError as exc:
            return Answer(error=str(exc))
        except DnsPermanentError:
            return Answer(nxdomain=True)  # a name DNS cannot ask for
        return Answer(tuple(self._text(query.rdtype, r) for r in records))

    @staticmethod
    def _text(rdtype: str, record: str) -> str:
        if rdtype == "TXT":
            return txt_string(record)
        if rdtype == "MX":
            return record.partition(" ")[2].rstrip(".")
        return record.rstrip(".") if rdtype == "PTR" else record


class SpfPolicy(Hook):
    name = "spf"

    def __init__(
        self,
        section: SpfSection,
        hostname: str,
        lookup: DnsLookup,
        allow: list[Network],
    ) -> None:
        self.section = section
        self.hostname = hostname
        self.authserv_id = section.authserv_id or hostname
        self.lookup = lookup
        self.allow = allow
        self._checks: dict[str, list[Check]] = {}  # session id -> this transaction's checks

    def exempt(self, session: SessionInfo) -> bool:
        return unchecked(session, self.allow)

    async def mail(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        self._checks.pop(session.session_id, None)
        if self.exempt(session):
            return None
        checks = await self.check(session, txn)
        self._checks[session.session_id] = checks
        metrics.spf_result(checks[0].outcome.result)
        first = checks[0]
        scope = "mfrom" if first.identity == "mailfrom" else "helo"
        txn.spf_identity = (first.outcome.domain, scope, str(first.outcome.result))
        txn.log_fields["spf"] = str(checks[0].outcome.result)
        reply = self.verdict(checks)
        if reply is not None or any(c.outcome.result is Result.TEMPERROR for c in checks):
            log.info(
                "%s: spf: [%s] %s: %s",
                txn.queue_id,
                session.client_address,
                "; ".join(_describe(c) for c in checks),
                reply or "accepted (spf.temperror = mark)",
            )
        return reply if self.section.stage is SpfStage.MAIL else None

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        checks = self._checks.get(session.session_id)
        return self.verdict(checks) if checks else None

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        checks = self._checks.get(session.session_id)
        if not checks or txn.headers is None:
            return None
        helo = session.helo
        for check in reversed(checks):
            value = received_spf(
                check.outcome,
                ip=session.client_address,
                sender=check.sender,
                helo=helo,
                receiver=self.hostname,
                identity=check.identity,
            )
            txn.headers.insert(0, Header.make("Received-SPF", value))
        lines = txn.auth_results.setdefault(self.authserv_id, [])
        ours = 1 if lines else 0
        lines += [_resinfo(c, helo) for c in checks]
        forged = authresults.write(txn.headers, self.authserv_id, lines) - ours
        if forged:
            log.info("%s: spf: removed %d forged Authentication-Results", txn.queue_id, forged)
        return None

    async def reset(self, session: SessionInfo, txn: Transaction | None) -> None:
        self._checks.pop(session.session_id, None)

    async def close(self, session: SessionInfo) -> None:
        self._checks.pop(session.session_id, None)

    # ---- the check
    async def check(self, session: SessionInfo, txn: Transaction) -> list[Check]:
        """The MAIL FROM identity's check first, then the HELO name's when asked for."""
        ip, helo = session.client_address, session.helo
        sender = str(txn.sender) if txn.sender is not None else ""
        checks: list[Check] = []
        if sender:
            checks.append(Check("mailfrom", sender, await self._run(ip, sender, helo)))
        if not sender or (self.section.helo and valid_domain(helo)):
            checks.append(Check("helo", "", await self._run(ip, "", helo)))
        return checks

    async def _run(self, ip: str, sender: str, helo: str) -> Outcome:
        domain = sender.rpartition("@")[2] if sender else helo
        evaluation = check_host(
            ip, domain, sender, helo, receiver=self.hostname, now=int(time.time())
        )
        try:
            async with asyncio.timeout(self.section.timeout):
                return await run_async(evaluation, self.lookup)
        except TimeoutError:
            why = f"no answer within {self.section.timeout:g} s"
            log.info("spf: check of %s from [%s] timed out: temperror", domain, ip)
            return Outcome(Result.TEMPERROR, domain, problem=why)

    # ---- what a result does
    def verdict(self, checks: list[Check]) -> Reply | None:
        """The refusal the checks earn, or None. A HELO fail counts; the sender's result
        decides otherwise."""
        for check in checks:
            helo_only_counts_on_fail = check.identity == "helo" and len(checks) > 1
            if helo_only_counts_on_fail and check.outcome.result is not Result.FAIL:
                continue
            if (reply := self._reply(check)) is not None:
                return reply
        return None

    def _reply(self, check: Check) -> Reply | None:
        outcome, section = check.outcome, self.section
        action = {
            Result.FAIL: section.fail,
            Result.SOFTFAIL: section.softfail,
            Result.PERMERROR: section.permerror,
            Result.TEMPERROR: section.temperror,
        }.get(outcome.result)
        if action is not SpfAction.REFUSE:
            return None
        who = check.sender or f"HELO {outcome.domain}"
        if outcome.result is Result.TEMPERROR:
            return Reply.of(451, "4.7.24", f"SPF: temporary DNS error checking {who}, try later")
        if outcome.result is Result.PERMERROR:
            return Reply.of(550, "5.7.24", f"SPF: {who}: bad SPF record")
        text = _printable(outcome.explanation) or (
            f"{outcome.domain} does not designate this host as a permitted sender"
        )
        return Reply.of(550, "5.7.23", f"SPF {outcome.result}: {who}: {text}")


def _printable(text: str | None) -> str:
    if not text:
        return ""
    return " ".join("".join(c if " " <= c <= "~" else "?" for c in text).split())[:200]


def _describe(check: Check) -> str:
    text = f"{check.identity}={check.sender or check.outcome.domain} {check.outcome.result}"
    return text + (f" ({check.outcome.problem})" if check.outcome.problem else "")


def _resinfo(check: Check, helo: str) -> str:
    """``spf=pass smtp.mailfrom=alice@example.org`` (RFC 8601 2.7.2)."""
    outcome = check.outcome
    text = f"spf={outcome.result}"
    if outcome.problem and outcome.result in (Result.PERMERROR, Result.TEMPERROR):
        text += f" reason={authresults.value(outcome.problem)}"
    if check.identity == "mailfrom":
        return f"{text} smtp.mailfrom={authresults.address_value(check.sender)}"
    return f"{text} smtp.helo={authresults.value(helo)}"


def from_settings(settings: Settings) -> SpfPolicy | None:
    """The hook for ``[spf]``, or None when it is off (the default)."""
    section = settings.spf
    if not section.enabled:
        return None
    resolver = DnsResolver.from_settings(settings.dns)
    return SpfPolicy(section, settings.hostname, DnsLookup(resolver), parse_networks(section.allow))
