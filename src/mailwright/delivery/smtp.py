"""The SMTP delivery agent: a message to its next hop's mail exchangers, per-recipient results.

``SmtpAgent.deliver`` takes a pooled session to the next hop if one is idle,
otherwise asks the ``Resolver`` for the hosts (MX order for a domain, the
host's own addresses for ``[host]``; an IP literal needs no DNS) and tries
them in order: a refused or timed-out connection, a greeting or EHLO that is
not 2xx, a 421, or a session lost before the end of data moves on to the next
host with the recipients still open; when none is left they are DEFERRED
with the last error. DNS trouble defers (4.4.3); a null MX (RFC 7505) fails
with 5.1.10 and a domain that does not exist with 5.1.2.

Before sending, what the peer offered decides: a SIZE limit below the
message fails it with 5.3.4; SMTPUTF8 needed but not offered fails with
5.6.7 (never a silent downgrade); 8-bit content for a peer without 8BITMIME is
converted to quoted-printable where ``delivery.eightbit`` can do so safely,
otherwise it fails with 5.6.3. STARTTLS is used when offered (opportunistic:
no certificate check), a failed handshake is retried once in plaintext on the
same host and remembered; a ``TlsPolicy`` with ``require``/``verify`` makes
missing or unverified TLS a deferral (4.7.5).

MTA-STS (RFC 8461), from the ``mta_sts`` source (``delivery.tlspolicy.MtaStsGate``,
looked up while the MX hosts are): under a policy in mode ``enforce`` only the
MX hosts the policy lists are tried, each with TLS whose certificate verifies
for the MX name; otherwise the mail is deferred with 4.7.5 "MTA-STS policy of
<domain>: ...". In mode ``testing`` the mail goes as usual and what enforcing
would have refused is logged (a host failing the TLS check costs a second
connection).

DANE (RFC 7672), from the ``dane`` source (``delivery.dane.DaneGate``, asked once
the MX hosts are known): a DANE-protected host is tried only with TLS whose
certificate chain matches its TLSA records; a mismatch, a missing STARTTLS or a
failed TLSA lookup defers that host with 4.7.5 (the next host is tried; never
plaintext). DANE takes precedence over MTA-STS (RFC 8461 2): a DANE-protected host
is tried even when an enforced policy does not list it, and its TLS is checked by
DANE alone. The log line of the attempt says ``tls=dane-verified`` (or
``dane-failed``, ``dane-lookup-failed``, ``dane-required``: a ``dane-only`` destination's
MX host without validated TLSA records).

TLS reports (RFC 8460), with ``tls_reports`` (a ``routing.tlsrpt.TlsRecorder``): each
session to an MX host is counted as a success or a failure's result type, a failure with
the name in the peer's EHLO reply (when the session got that far) and its reason in a few
stable words (OpenSSL's verification message, ``STARTTLS not offered``, the peer's reply
refusing STARTTLS, the DANE check that failed, the MTA-STS policy's problem).

``TLS-Required: No`` (RFC 8689 5), with ``tls_required_no``: a message whose sender
asks that the recipient domain's TLS policies be ignored (a TLS report about those very
policies carries it: RFC 8460 5.3) goes without DANE and MTA-STS, with TLS when it can be
had (the administrator's ``tls_policy`` still applies); its sessions are not counted for
TLS reports and never go back to the pool, where a message under a policy could take one.

REQUIRETLS (RFC 8689 4.2.1), a message sent with it (and a return path): only MX hosts
found through DNSSEC or listed by the MTA-STS policy (a named next hop needs neither; none:
deferred 4.7.30), only over TLS verified by DANE or for the host's name (never a fallback:
4.7.5), only to a peer offering REQUIRETLS (else 5.7.30 unless another host deferred; the
next host is tried), which gets it in MAIL; never on a pooled session. The
``TLS-Required`` field is then ignored.

SMTP AUTH (RFC 4954) with the ``credentials`` found for the next hop (a
``routing.credentials.CredentialsTable``): after STARTTLS, before the first
MAIL. A refused login defers (4.7.0, the peer's reply in the text; Postfix's
``smtp_sasl_auth_soft_bounce``) and the next host is tried; without TLS the
credentials are sent only to a loopback address or with ``plaintext_auth``,
else 4.7.0 "refusing to send credentials without TLS". A peer that offers no
AUTH gets the mail without a login. Pooled sessions are reused only for the
same credentials.

Outbound address rewriting (``routing.generic``, ``[rewrite]``): with a
``rewriter``, the envelope sender and the header addresses are rewritten as the
message leaves; the queued copy, the recipients and DSNs keep the original.
Then, with ``arc`` (``delivery.arcseal``), forwarded mail gets its ARC Set.

Outcome per recipient: 2xx after the content is DELIVERED, or RELAYED when the
peer lacks DSN and the recipient asked for NOTIFY=SUCCESS (RFC 3461 4.1); 4xx
DEFERRED; 5xx FAILED. A RCPT rejection is that recipient's alone; MAIL and
DATA rejections are everyone's. ``reply`` is the peer's own reply (an
enhanced status is derived from the class when the peer sent none).

Trusts nothing from the peer (see ``smtp.client``); trusts the request's
addresses only after checking they cannot break a command line. Reads its
settings from the constructor: HELO name, port, timeouts, TLS policy and
contexts, CHUNKING use, and the idle-session pool limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator

from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.envelope import BodyType, Notify
from mailwright.core.reply import Reply
from mailwright.delivery.agent import DeliveryRequest, NotQueuedError
from mailwright.delivery.arcseal import ArcSealing
from mailwright.delivery.dane import REQUIRED as DANE_REQUIRED
from mailwright.delivery.dane import DaneGate, DaneHost
from mailwright.delivery.eightbit import contains_8bit, downgrade
from mailwright.delivery.pool import SessionPool
from mailwright.delivery.session import (
    STARTTLS_NOT_OFFERED,
    ClientSession,
    ClientTimeouts,
    ContentError,
    Endpoint,
    SessionError,
    TlsPolicy,
    is_ip_literal,
    opportunistic_context,
)
from mailwright.observability import metrics
from mailwright.routing.generic import AddressRewriter
from mailwright.routing.mtasts import StsMode, StsPolicy
from mailwright.routing.nexthop import NextHop
from mailwright.routing.resolver import (
    DnsPermanentError,
    DnsTemporaryError,
    MailHost,
    NullMxError,
    Resolver,
)
from mailwright.routing.tlsrpt import ReportedPolicy, Result, TlsRecorder
from mailwright.smtp.client import (
    ClientSettings,
    Credentials,
    Extensions,
    RecipientReply,
    Transaction,
    TransactionRecipient,
)
from mailwright.smtp.reply import status_or_default

TlsPolicySource = TlsPolicy | Callable[[NextHop], TlsPolicy]
CredentialsSource = Callable[[NextHop], Credentials | None]
StsSource = Callable[[NextHop], Awaitable[StsPolicy | None]]
_UNSAFE = ("\r", "\n", "\0")  # would break the command line; anything else is quoted as is
log = logging.getLogger(__name__)


def with_status(reply: Reply) -> Reply:
    """The reply with an enhanced status (``X.0.0`` from its class if the peer sent none)."""
    if reply.status is not None:
        return reply
    return reply.with_status(status_or_default(reply))


def as_transient(reply: Reply) -> Reply:
    """A 5xx that ends a session (not a recipient) is a reason to try later: 4xx, same text."""
    reply = with_status(reply)
    if not reply.permanent:
        return reply
    status = "4" + (reply.status or "5.0.0")[1:]
    return reply.with_code(reply.code - 100, status)


class SmtpAgent:
    """Delivers over SMTP; safe to call ``deliver`` concurrently."""

    name = "esmtp"
    lmtp = False
    default_port = 25

    def __init__(
        self,
        hostname: str,
        resolver: Resolver | None,
        *,
        port: int | None = None,
        timeouts: ClientTimeouts | None = None,
        tls: TlsPolicySource | None = None,
        tls_context: ssl.SSLContext | None = None,
        verify_context: ssl.SSLContext | None = None,
        chunking: bool = True,
        idle_timeout: float = 10.0,
        max_idle: int = 20,
        max_session_age: float = 300.0,
        tls_fallback_memory: float = 3600.0,
        credentials: CredentialsSource | None = None,
        plaintext_auth: bool = False,
        plaintext_auth_loopback: bool = True,
        rewriter: AddressRewriter | None = None,
        mta_sts: StsSource | None = None,
        dane: DaneGate | None = None,
        sts_problem: Callable[[NextHop], tuple[str, str] | None] | None = None,
        tls_reports: TlsRecorder | None = None,
        arc: ArcSealing | None = None,
        tls_required_no: bool = True,
    ) -> None:
        self.hostname = hostname
        self.resolver = resolver
        self.port = port or self.default_port
        self.timeouts = timeouts or ClientTimeouts()
        self.tls: TlsPolicySource = tls if tls is not None else TlsPolicy()
        self.tls_context = tls_context or opportunistic_context()
        self.verify_context = verify_context or ssl.create_default_context()
        self.chunking = chunking
        self.tls_fallback_memory = tls_fallback_memory
        self.pool = SessionPool(idle_timeout, max_idle, max_session_age)
        # endpoint key -> when to try TLS again, and why it failed (its TLS reports' reason)
        self._plaintext_until: dict[str, tuple[float, str]] = {}
        self.credentials = credentials
        self.plaintext_auth = plaintext_auth  # send credentials without TLS to anyone
        self.plaintext_auth_loopback = plaintext_auth_loopback  # ... or to loopback only
        self.rewriter = rewriter  # outbound masquerading / generic table (routing.generic)
        self.mta_sts = mta_sts
        self.dane = dane
        self.sts_problem = sts_problem  # why a domain with an MTA-STS record has no policy
        self.tls_reports = tls_reports  # RFC 8460 session counts (routing.tlsrpt)
        self.arc = arc  # ARC sealing of forwarded mail (delivery.arcseal)
        self.tls_required_no = tls_required_no  # honour "TLS-Required: No" (RFC 8689)

    # ---- the DeliveryAgent interface -----------------------------------------------------
    async def deliver(self, request: DeliveryRequest) -> list[DeliveryResult]:
        results: dict[int, DeliveryResult] = {}
        try:
            request = rewritten(request, self.rewriter)
            if self.arc is not None:
                request = await self.arc.sealed(request)
            pending = self._screen(request, results)
            key = request.next_hop.key
            login = self._login(request.next_hop)
            # a REQUIRETLS message takes no pooled session: it opens its own (RFC 8689 4.2.1)
            pooled = not self._strict(request)
            while pending and pooled and (session := self.pool.take(key)) is not None:
                if session.credentials != login:  # the table changed: log in afresh
                    await session.quit()
                    continue
                pending = await self._attempt(session, request, pending, results)
            if pending:
                await self._deliver_fresh(request, pending, results)
        except NotQueuedError as exc:  # an early start whose insert failed: nothing is recorded
            reply = Reply.of(451, "4.3.0", str(exc))
            for r in request.recipients:
                results.setdefault(r.index, DeliveryResult(r.index, Outcome.DEFERRED, reply))
        except Exception as exc:  # a bug here must not lose the mail or crash the scheduler
            log.exception("%s: delivery to %s failed", request.queue_id, request.next_hop)
            reply = Reply.of(451, "4.3.0", f"Internal error during delivery: {exc!r}")
            for r in request.recipients:  # results already settled stand
                results.setdefault(r.index, DeliveryResult(r.index, Outcome.DEFERRED, reply))
        return [results[r.index] for r in request.recipients]

    async def close(self) -> None:
        await self.pool.close()

    # ---- hosts ----------------------------------------------------------------------------
    async def _deliver_fresh(
        self,
        request: DeliveryRequest,
        pending: list[DeliveryRecipient],
        results: dict[int, DeliveryResult],
    ) -> None:
        hop = request.next_hop
        strict = self._strict(request)
        # RFC 8689 4.1: with REQUIRETLS the TLS-Required field is ignored
        relaxed = not strict and self.tls_required_no and tls_not_required(request)
        try:
            sts, endpoints = await asyncio.gather(
                self._sts_policy(hop, relaxed), self._endpoints(hop)
            )
        except NullMxError:
            text = f"Domain {hop.host} does not accept mail (null MX, RFC 7505)"
            self._settle(pending, results, Outcome.FAILED, Reply.of(556, "5.1.10", text))
            return
        except DnsPermanentError as exc:
            text = f"Host or domain name not found: {hop.host}: {exc}"
            self._settle(pending, results, Outcome.FAILED, Reply.of(550, "5.1.2", text))
            return
        except DnsTemporaryError as exc:
            text = f"Temporary DNS failure for {hop.host}: {exc}"
            self._settle(pending, results, Outcome.DEFERRED, Reply.of(451, "4.4.3", text))
            return
        if not endpoints:
            text = f"No mail host found for {hop.host or hop.socket_path}"
            self._settle(pending, results, Outcome.FAILED, Reply.of(550, "5.1.2", text))
            return
        dane = {} if relaxed else await self._dane_hosts(hop, endpoints)
        report = None if relaxed else self._report_policy(hop, sts)
        if sts is not None:
            endpoints = self._sts_endpoints(request, sts, endpoints, dane, report)
            if not endpoints:
                text = _sts_text(hop, "no MX host matches the policy")
                self._settle(pending, results, Outcome.DEFERRED, Reply.of(451, "4.7.5", text))
                return
        if strict:
            endpoints = self._validated(hop, endpoints, sts, dane, pending, results)
        for endpoint in endpoints:
            state = dane.get(endpoint.name)
            if isinstance(state, Reply):  # the TLSA lookup failed, or dane-only and none
                required = state.text.endswith(DANE_REQUIRED)
                details = {"tls_check": "dane-required" if required else "dane-lookup-failed"}
                peer = endpoint.remote_mta
                self._settle(pending, results, Outcome.DEFERRED, state, peer, details)
                if report is not None:
                    tlsa = ReportedPolicy.tlsa(report[0].domain, endpoint.name, ())
                    if required:
                        result, why = Result.DANE_REQUIRED, "no DNSSEC-validated TLSA records"
                    else:
                        result, why = Result.DNSSEC_INVALID, "TLSA lookup failed"
                    self._tls_failed(tlsa, result, endpoint, reason=why)
                continue
            reported = report
            if report is not None and state is not None:
                tlsa = ReportedPolicy.tlsa(report[0].domain, state.name, state.records)
                reported = (tlsa, None, "")
            try:
                if strict:
                    session = await self._open_strict(endpoint, hop, state)
                else:
                    session = await self._open(
                        endpoint, hop, sts, request.queue_id, state, reported
                    )
            except SessionError as exc:
                metrics.outbound(hop.key, "failed")
                reply = as_transient(exc.reply)
                details = self._dane_failed(state, reply)
                peer = endpoint.remote_mta
                self._settle(pending, results, Outcome.DEFERRED, reply, peer, details)
                if reported is not None and exc.tls_result:
                    policy, forced, forced_why = reported
                    result, why = (forced, forced_why) if forced else _tls_result(exc, state)
                    self._tls_failed(
                        policy, result, endpoint, exc.local_address, exc.peer_helo, why
                    )
                continue
            metrics.outbound(hop.key, "opened")
            session.poolable = not relaxed and not strict
            if strict and (refused := _requiretls_refusal(session)) is not None:
                # RFC 8689 4.2.1: another MX host may offer it; a host that was only
                # unreachable keeps the recipients deferred (it may offer it, later)
                unsettled = [r for r in pending if not _deferred(results, r)]
                self._settle(unsettled, results, Outcome.FAILED, refused, session.peer)
                self._release(hop.key, session)
                continue
            if relaxed:
                log.info("%s: TLS-Required: No: no DANE or MTA-STS for %s", request.queue_id, hop)
            if state is not None:
                metrics.dane("verified" if state.records else "encrypted")
            if reported is not None:
                self._tls_session(reported, session, sts, state, hop)
            pending = await self._attempt(session, request, pending, results)
            if not pending:
                return

    def _strict(self, request: DeliveryRequest) -> bool:
        """REQUIRETLS (RFC 8689 4.2.1) binds every SMTP hop of a message with a return
        path; LMTP is final delivery. A report (null path) passes the tag on where offered."""
        return request.params.requiretls and bool(request.sender) and not self.lmtp

    def _validated(
        self,
        hop: NextHop,
        endpoints: list[Endpoint],
        sts: StsPolicy | None,
        dane: dict[str, DaneHost | Reply],
        pending: list[DeliveryRecipient],
        results: dict[int, DeliveryResult],
    ) -> list[Endpoint]:
        """The MX hosts a REQUIRETLS message may go to: found through DNSSEC, or listed by
        the domain's MTA-STS policy (RFC 8689 4.2.1); a next hop the administrator named
        (no MX lookup) needs neither. None left: deferred with 4.7.30 (a policy that could
        not be fetched, or DNS trouble, must not bounce the mail: the queue's lifetime
        does, with this reason)."""
        if not hop.mx or hop.socket_path or is_ip_literal(hop.host.strip("[]")):
            return endpoints
        valid = [
            e
            for e in endpoints
            if e.dnssec or e.name in dane or (sts is not None and sts.matches(e.name))
        ]
        if not valid:
            text = (
                f"REQUIRETLS: no MX host of {hop.host} is validated by DNSSEC or an MTA-STS policy"
            )
            self._settle(pending, results, Outcome.DEFERRED, Reply.of(451, "4.7.30", text))
        return valid

    async def _open_strict(
        self, endpoint: Endpoint, hop: NextHop, dane: DaneHost | None
    ) -> ClientSession:
        """A session for a REQUIRETLS message: TLS that DANE or the certificate's name
        (RFC 6125, for the MX host) verifies, never a fallback (a Unix socket: none). A DANE
        host whose TLSA records are all unusable gets the name check: DANE would only
        require TLS there, unauthenticated."""
        if dane is not None and dane.records:
            policy = dane.policy()
        elif endpoint.socket_path:
            policy = self._tls_policy(hop)
        else:
            policy = TlsPolicy(verify=True)
        return await self._open_with(endpoint, hop, policy)

    async def _endpoints(self, hop: NextHop) -> list[Endpoint]:
        port = hop.port or self.port
        if hop.socket_path:
            return [Endpoint("localhost", socket_path=hop.socket_path)]
        host = hop.host.removeprefix("[").removesuffix("]")
        if is_ip_literal(host):
            address = host.removeprefix("IPv6:")
            return [Endpoint(address, address, port)]
        hosts = await self._lookup(host, mx=hop.mx and not self.lmtp)
        return [
            Endpoint(h.name, h.address, port, dnssec=h.secure, canonical=h.canonical) for h in hosts
        ]

    async def _lookup(self, host: str, mx: bool) -> list[MailHost]:
        if self.resolver is None:
            raise DnsPermanentError(f"no resolver configured to look up {host}")
        if mx:
            return await self.resolver.mail_hosts(host)
        return await self.resolver.host_addresses(host)

    def _login(self, hop: NextHop) -> Credentials | None:
        return self.credentials(hop) if self.credentials is not None else None

    def _plaintext_auth(self, endpoint: Endpoint) -> bool:
        if self.plaintext_auth:
            return True
        try:
            loopback = ipaddress.ip_address(endpoint.address).is_loopback
        except ValueError:
            loopback = bool(endpoint.socket_path)
        return loopback and self.plaintext_auth_loopback

    def _tls_policy(self, hop: NextHop) -> TlsPolicy:
        return self.tls(hop) if callable(self.tls) else self.tls

    async def _sts_policy(self, hop: NextHop, relaxed: bool = False) -> StsPolicy | None:
        """The destination's MTA-STS policy when it asks for something (MX routes only;
        none for a ``relaxed`` message)."""
        if self.mta_sts is None or self.lmtp or hop.socket_path or not hop.mx or relaxed:
            return None
        if is_ip_literal(hop.host.removeprefix("[").removesuffix("]")):
            return None
        policy = await self.mta_sts(hop)
        return None if policy is None or policy.mode is StsMode.NONE else policy

    async def _dane_hosts(
        self, hop: NextHop, endpoints: list[Endpoint]
    ) -> dict[str, DaneHost | Reply]:
        """The DANE-protected hosts among ``endpoints`` (MX routes with ``delivery.dane``)."""
        if self.dane is None or self.lmtp or hop.socket_path:
            return {}
        return await self.dane.hosts(hop, endpoints)

    @staticmethod
    def _dane_failed(state: DaneHost | None, reply: Reply) -> dict[str, str]:
        if state is None or reply.status != "4.7.5":
            return {}
        metrics.dane("failed")
        return {"tls_check": "dane-failed"}

    def _sts_endpoints(
        self,
        request: DeliveryRequest,
        sts: StsPolicy,
        endpoints: list[Endpoint],
        dane: dict[str, DaneHost | Reply],
        report: _Report | None = None,
    ) -> list[Endpoint]:
        """The MX hosts the policy lists, and DANE-protected ones (RFC 8461 2: DANE
        takes precedence); testing mode: all, the others logged."""
        listed = [e for e in endpoints if sts.matches(e.name) or e.name in dane]
        if sts.mode is StsMode.ENFORCE:
            if report is not None:  # hosts never tried: a failed session each (RFC 8460)
                for endpoint in endpoints:
                    if endpoint not in listed:
                        self._tls_failed(
                            report[0], Result.VALIDATION_FAILURE, endpoint, reason=_NOT_LISTED
                        )
            return listed
        for name in dict.fromkeys(e.name for e in endpoints if e not in listed):
            text = _sts_text(request.next_hop, f"MX host {name} is not listed in the policy")
            log.warning("%s: %s (testing mode: delivering anyway)", request.queue_id, text)
        return endpoints

    async def _open(
        self,
        endpoint: Endpoint,
        hop: NextHop,
        sts: StsPolicy | None = None,
        queue_id: str = "",
        dane: DaneHost | None = None,
        report: _Report | None = None,
    ) -> ClientSession:
        if dane is not None:  # DANE takes precedence over MTA-STS (RFC 8461 2)
            return await self._open_with(endpoint, hop, dane.policy())
        if sts is None:
            return await self._open_with(endpoint, hop, self._tls_policy(hop))
        try:
            return await self._open_with(endpoint, hop, TlsPolicy(verify=True))
        except SessionError as exc:
            if exc.reply.status != "4.7.5":  # not about TLS: connection refused and such
                raise
            reply = Reply.of(exc.reply.code, "4.7.5", _sts_text(hop, exc.reply.text))
            if sts.mode is StsMode.ENFORCE:
                error = SessionError(reply, tls_result=exc.tls_result, tls_reason=exc.tls_reason)
                error.local_address = exc.local_address
                error.peer_helo = exc.peer_helo
                raise error from None
            if report is not None and exc.tls_result:  # what enforcing would have refused
                self._tls_failed(
                    report[0],
                    Result(exc.tls_result),
                    endpoint,
                    exc.local_address,
                    exc.peer_helo,
                    exc.tls_reason,
                )
        log.warning("%s: %s (testing mode: delivering anyway)", queue_id, reply.text)
        session = await self._open_with(endpoint, hop, self._tls_policy(hop))
        session.tls_reported = True
        return session

    async def _open_with(
        self, endpoint: Endpoint, hop: NextHop, policy: TlsPolicy
    ) -> ClientSession:
        settings = ClientSettings(
            self.hostname, lmtp=self.lmtp, peer=endpoint.remote_mta, chunking=self.chunking
        )
        context = self.verify_context if policy.verify else self.tls_context
        login = self._login(hop)
        plaintext = self._plaintext_auth(endpoint)
        now = time.monotonic()
        until, failure = self._plaintext_until.get(endpoint.key, (0.0, ""))
        remembered = not policy.required and until > now
        if remembered:
            policy = dataclasses.replace(policy, starttls=False)
        try:
            session = await ClientSession.open(
                endpoint, settings, self.timeouts, policy, context, login, plaintext
            )
        except SessionError as exc:
            if not exc.tls_handshake or policy.required:
                raise
            failure = exc.tls_reason
        else:
            if remembered:  # the handshake that failed is the reason, as long as it is held
                session.tls_failure = failure or _EARLIER_HANDSHAKE
            return session
        # RFC 7435 opportunistic TLS: a broken handshake must not stop the mail
        self._plaintext_until[endpoint.key] = (now + self.tls_fallback_memory, failure)
        plain = dataclasses.replace(policy, starttls=False)
        session = await ClientSession.open(
            endpoint, settings, self.timeouts, plain, context, login, plaintext
        )
        session.tls_failure = failure
        return session

    # ---- TLS reports (RFC 8460) -----------------------------------------------------------
    def _report_policy(self, hop: NextHop, sts: StsPolicy | None) -> _Report | None:
        """The policy the sessions of this delivery are reported under, and the result
        that overrides theirs (an MTA-STS domain whose policy could not be had); None
        when nothing is reported (no recorder, not an MX route, LMTP)."""
        if self.tls_reports is None or self.lmtp or hop.socket_path or not hop.mx:
            return None
        domain = hop.host.lower().rstrip(".")
        if domain.startswith("[") or not self._tls_policy(hop).starttls:
            return None  # an address literal, or the administrator said no TLS
        if sts is not None:
            return ReportedPolicy.sts(domain, sts), None, ""
        problem = self.sts_problem(hop) if self.sts_problem is not None else None
        if problem:
            result, why = problem
            return ReportedPolicy.sts(domain, None), Result(result), why
        return ReportedPolicy.none(domain), None, ""

    def _tls_failed(
        self,
        policy: ReportedPolicy,
        result: Result,
        endpoint: Endpoint,
        local: str = "",
        helo: str = "",
        reason: str = "",
    ) -> None:
        if self.tls_reports is not None:
            self.tls_reports.record(
                policy,
                result,
                sending_ip=local,
                receiving_mx=endpoint.name,
                receiving_ip=endpoint.address,
                receiving_helo=helo,
                reason=reason,
            )

    def _tls_session(
        self,
        report: _Report,
        session: ClientSession,
        sts: StsPolicy | None,
        dane: DaneHost | None,
        hop: NextHop,
    ) -> None:
        """A session that opened: success, or why its TLS falls short of the policy."""
        if session.tls_reported:  # testing mode: its failure is counted already
            return
        policy, forced, why = report
        endpoint = session.endpoint
        if forced is not None:
            result = forced
        elif dane is None and sts is not None and not sts.matches(endpoint.name):
            result, why = Result.VALIDATION_FAILURE, _NOT_LISTED  # testing mode
        elif session.conn.tls:
            result = Result.SUCCESS
        elif session.extensions.starttls:
            # STARTTLS refused, or a handshake that failed: plaintext now
            result, why = Result.VALIDATION_FAILURE, session.tls_failure
        else:
            result, why = Result.STARTTLS_NOT_SUPPORTED, STARTTLS_NOT_OFFERED
        self._tls_failed(policy, result, endpoint, session.local_address, session.peer_helo, why)

    # ---- one transaction ------------------------------------------------------------------
    async def _attempt(
        self,
        session: ClientSession,
        request: DeliveryRequest,
        pending: list[DeliveryRecipient],
        results: dict[int, DeliveryResult],
    ) -> list[DeliveryRecipient]:
        """Send to ``pending`` over ``session``; returns those worth trying elsewhere
        (the session was lost before the end of data). Releases or drops the session."""
        key = request.next_hop.key
        ext = session.extensions
        refusal = self._refusal(request, ext, session.peer)
        if refusal is not None:
            self._settle(pending, results, Outcome.FAILED, refusal, session.peer)
            self._release(key, session)
            return []
        plan = self._content(request, pending, ext, session.peer)
        if isinstance(plan, Reply):
            self._settle(pending, results, Outcome.FAILED, plan, session.peer)
            self._release(key, session)
            return []
        transaction, content, details = plan
        try:
            result = await session.send(transaction, content(), request.committed)
        except ContentError as exc:
            reply = Reply.of(451, "4.3.0", f"Error reading the queued message: {exc}")
            self._settle(pending, results, Outcome.DEFERRED, reply)
            return []
        except SessionError as exc:
            session.abort()
            self._settle(pending, results, Outcome.DEFERRED, as_transient(exc.reply), session.peer)
            return pending
        details["transfer"] = "BDAT" if result.bdat else "DATA"
        retry = []
        for rcpt, answer in zip(pending, result.replies, strict=True):
            results[rcpt.index] = self._result(rcpt, answer, session, details)
            if answer.lost and not result.content_ended:
                retry.append(rcpt)
        if result.session_lost:
            session.abort()
        else:
            self._release(key, session)
        return retry

    def _release(self, key: str, session: ClientSession) -> None:
        """Back to the pool, or closed when no message under a policy may have it."""
        if session.poolable:
            self.pool.put(key, session)
        else:
            self.pool.discard(session)

    def _refusal(self, request: DeliveryRequest, ext: Extensions, peer: str) -> Reply | None:
        """Reasons not to send at all, from what the peer offered."""
        if ext.size and request.size > ext.size:
            text = f"Message size {request.size} exceeds the limit of {peer} ({ext.size} octets)"
            return Reply.of(552, "5.3.4", text)
        if request.params.smtputf8 and not ext.smtputf8:
            text = f"Message needs SMTPUTF8, which {peer} does not support"
            return Reply.of(553, "5.6.7", text)
        return None

    def _content(
        self, request: DeliveryRequest, pending: list[DeliveryRecipient], ext: Extensions, peer: str
    ) -> Reply | tuple[Transaction, Callable[[], Iterator[bytes]], dict[str, str]]:
        """The transaction and the message as it will be sent (maybe made 7-bit)."""
        params = request.params.replace(size=request.size)
        headers, body = request.headers, request.body
        details: dict[str, str] = {}
        if params.body is BodyType.EIGHT_BIT and not ext.eightbitmime:
            if contains_8bit(_message(headers.encode(), body)):
                converted = downgrade(headers, body)
                if converted is None:
                    text = (
                        f"Message has 8-bit content that cannot be converted to 7-bit, "
                        f"and {peer} does not support 8BITMIME"
                    )
                    return Reply.of(554, "5.6.3", text)
                headers, body = converted.headers, converted.body
                details["conversion"] = "8bit to quoted-printable"
            params = params.replace(body=BodyType.SEVEN_BIT)
        head = headers.encode()
        recipients = [TransactionRecipient(r.address, r.notify, _orcpt(r.orcpt)) for r in pending]
        transaction = Transaction(request.sender, recipients, params)
        return transaction, lambda: _message(head, body), details

    # ---- results --------------------------------------------------------------------------
    def _screen(
        self, request: DeliveryRequest, results: dict[int, DeliveryResult]
    ) -> list[DeliveryRecipient]:
        """Recipients whose addresses are safe on a command line (the others fail now)."""
        if any(c in request.sender for c in _UNSAFE):
            reply = Reply.of(553, "5.1.7", f"Bad sender address syntax: {request.sender!r}")
            self._settle(request.recipients, results, Outcome.FAILED, reply)
            return []
        pending = []
        for rcpt in request.recipients:
            if not rcpt.address or any(c in rcpt.address for c in _UNSAFE):
                reply = Reply.of(553, "5.1.3", f"Bad recipient address syntax: {rcpt.address!r}")
                results[rcpt.index] = DeliveryResult(rcpt.index, Outcome.FAILED, reply)
            else:
                pending.append(rcpt)
        return pending

    def _settle(
        self,
        recipients: list[DeliveryRecipient],
        results: dict[int, DeliveryResult],
        outcome: Outcome,
        reply: Reply,
        remote_mta: str = "",
        details: dict[str, str] | None = None,
    ) -> None:
        for rcpt in recipients:
            results[rcpt.index] = DeliveryResult(
                rcpt.index, outcome, reply, remote_mta, details=dict(details or {})
            )

    def _result(
        self,
        rcpt: DeliveryRecipient,
        answer: RecipientReply,
        session: ClientSession,
        details: dict[str, str],
    ) -> DeliveryResult:
        reply = with_status(answer.reply)
        if reply.code < 400 and not answer.after_content:
            # e.g. 250 to DATA: the message was never sent
            text = f"Protocol error: unexpected reply to {answer.phase.value}: {reply}"
            reply = Reply.of(451, "4.5.0", text)
        if reply.code < 400:
            outcome = self._accepted(rcpt, session.extensions)
        elif reply.code < 500:
            outcome = Outcome.DEFERRED
        else:
            outcome = Outcome.FAILED
        extra = {
            **session.tls_details,
            **session.auth_details,
            **details,
            "stage": answer.phase.value,
        }
        return DeliveryResult(rcpt.index, outcome, reply, session.peer, details=extra)

    def _accepted(self, rcpt: DeliveryRecipient, ext: Extensions) -> Outcome:
        if self.lmtp or ext.dsn:
            return Outcome.DELIVERED
        if rcpt.notify is not None and Notify.SUCCESS in rcpt.notify:
            return Outcome.RELAYED  # RFC 3461 4.1: the next hop will not report success
        return Outcome.DELIVERED


# the policy a delivery's sessions are reported under, and a result overriding theirs
# with its reason (RFC 8460 failure-reason-code)
_Report = tuple[ReportedPolicy, Result | None, str]
# routing.dane's words -> RFC 8460 result types, and the reason reported (stable words:
# no certificate subject, which may be long and differ from one host to the next)
_DANE_RESULTS = {
    "does not name": (
        Result.CERTIFICATE_HOST_MISMATCH,
        "certificate does not name the MX host (DANE-TA)",
    ),
    "outside its validity period": (
        Result.CERTIFICATE_EXPIRED,
        "certificate outside its validity period (DANE-TA)",
    ),
    "is not a CA": (Result.TLSA_INVALID, "chain to the DANE-TA record has a non-CA issuer"),
    "is not issued by": (Result.TLSA_INVALID, "broken chain to the DANE-TA record"),
    "presented no certificate": (Result.TLSA_INVALID, "no certificate presented"),
    "unreadable certificate": (Result.TLSA_INVALID, "unreadable certificate in the chain"),
}
_NO_TLSA_MATCH = "no TLSA record matched the certificate chain"
_NOT_LISTED = "MX host not listed in the MTA-STS policy"
_EARLIER_HANDSHAKE = "STARTTLS not tried: an earlier TLS handshake failed"


def tls_not_required(request: DeliveryRequest) -> bool:
    """Whether the message says ``TLS-Required: No`` (RFC 8689 5: one field, "No" in any
    case, white space around it allowed)."""
    fields = list(request.headers.all("TLS-Required"))
    return len(fields) == 1 and fields[0].text.strip().lower() == "no"


def _deferred(results: dict[int, DeliveryResult], rcpt: DeliveryRecipient) -> bool:
    known = results.get(rcpt.index)
    return known is not None and known.outcome is Outcome.DEFERRED


def _requiretls_refusal(session: ClientSession) -> Reply | None:
    """Why a session that opened for a REQUIRETLS message may not take it."""
    if not session.conn.tls and not session.endpoint.socket_path:
        return Reply.of(550, "5.7.30", f"REQUIRETLS: no TLS with {session.peer}")
    if not session.extensions.requiretls:
        return Reply.of(550, "5.7.30", f"REQUIRETLS: {session.peer} does not offer REQUIRETLS")
    return None


def _tls_result(exc: SessionError, dane: DaneHost | None) -> tuple[Result, str]:
    """The RFC 8460 result type of a session that failed its TLS, and its reason."""
    if dane is not None and "DANE verification failed" in exc.reply.text:
        for words, (result, why) in _DANE_RESULTS.items():
            if words in exc.reply.text:
                return result, why
        return Result.TLSA_INVALID, _NO_TLSA_MATCH  # the chain matches none of the records
    return Result(exc.tls_result), exc.tls_reason


def _sts_text(hop: NextHop, problem: str) -> str:
    return f"MTA-STS policy of {hop.host}: {problem}"


def _orcpt(orcpt: str | None) -> str | None:
    """ORCPT as received (xtext, validated by our server); anything unsendable is left out."""
    if orcpt is None or any(c.isspace() or c == "\0" for c in orcpt):
        return None
    return orcpt


def _message(head: bytes, body: Callable[[], Iterator[bytes]]) -> Iterator[bytes]:
    yield head + b"\r\n"
    yield from body()


def rewritten(request: DeliveryRequest, rewriter: AddressRewriter | None) -> DeliveryRequest:
    """The request as it leaves: sender and header addresses rewritten (``[rewrite]``),
    its size adjusted to the new header section; the recipients never change."""
    if rewriter is None:
        return request
    headers = rewriter.headers(request.headers)
    size = request.size + len(headers.encode()) - len(request.headers.encode())
    sender = rewriter.sender(request.sender)
    return dataclasses.replace(request, sender=sender, headers=headers, size=size)
