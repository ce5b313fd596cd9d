"""Builds the delivery side of the daemon: router, resolver, agents and the scheduler.

Used by the daemon and by admin commands that run the queue without a daemon
(``mailwright queue flush``, ``sendmail -q``, ``queue bounce``). Table problems
(transport table, static DNS table, relay credentials table) are logged, not
fatal: the router keeps mail queued rather than sending it the wrong way, and a
next hop whose login line is bad gets the mail without AUTH (the smarthost
refuses it, the mail stays queued). Local recipients go through the
alias ``Expander`` to the local agents (``delivery.local``). Settings: ``hostname``,
``queue.*``, ``delivery.*`` (including the outbound TLS policy, MTA-STS and DANE), ``dns.*``,
``routing.*``, ``local_delivery.*``, ``rewrite.*`` (the SMTP agent's address rewriting; a
bad generic table line is logged and skipped), ``arc.*`` (ARC sealing of forwarded mail).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import MappingProxyType

from mailwright.config.schema import Settings
from mailwright.core.reply import Reply
from mailwright.delivery.agent import DeliveryAgent
from mailwright.delivery.arcseal import ArcSealing
from mailwright.delivery.dane import DaneGate
from mailwright.delivery.deposit import Deposit
from mailwright.delivery.lmtp import LmtpAgent
from mailwright.delivery.local import local_agents
from mailwright.delivery.session import ClientTimeouts
from mailwright.delivery.smtp import CredentialsSource, SmtpAgent
from mailwright.delivery.tlspolicy import MtaStsGate, TlsPolicyTable, verify_context
from mailwright.manager.backoff import RetryPolicy
from mailwright.manager.expansion import Expander
from mailwright.manager.scheduler import DeliveryParts, Scheduler, SchedulerSettings, domain_of
from mailwright.queue.backend import clears_all_leases, queue_store
from mailwright.queue.store import QueueStore, StoreError
from mailwright.queue.writer import QueueWriter
from mailwright.routing.credentials import exposure, watch_credentials
from mailwright.routing.generic import AddressRewriter, rewriter_from_settings
from mailwright.routing.mtasts import MtaStsPolicies
from mailwright.routing.mtasts_store import policy_store
from mailwright.routing.mx import DnsResolver, resolver_from_settings
from mailwright.routing.nexthop import Transport
from mailwright.routing.resolution import AddressResolver
from mailwright.routing.resolver import Resolver
from mailwright.routing.router import Router
from mailwright.routing.tlsrpt import TlsRecorder

log = logging.getLogger("mailwright.queue")


def client_timeouts(settings: Settings) -> ClientTimeouts:
    d = settings.delivery
    return ClientTimeouts(
        connect=d.connect_timeout,
        greeting=d.greeting_timeout,
        helo=d.greeting_timeout,
        mail=d.command_timeout,
        rcpt=d.command_timeout,
        data_init=d.data_init_timeout,
        data_block=d.data_block_timeout,
        data_end=d.data_done_timeout,
    )


def relay_credentials(settings: Settings) -> CredentialsSource | None:
    """``delivery.auth_table``, read now (at start-up and on SIGHUP) and followed from then
    on (``core.watchedfile``, which logs its problems)."""
    path = settings.delivery.auth_table
    if path is None:
        return None
    table = watch_credentials(path)
    if (warning := exposure(path)) is not None:
        log.warning("auth table: %s", warning)
    return table


def outbound_rewriter(settings: Settings) -> AddressRewriter | None:
    """``[rewrite]`` with its generic table, read now (at start-up and on SIGHUP) and
    followed from then on; problems are logged (by the watched file) and the bad lines
    skipped."""
    rewriter, _ = rewriter_from_settings(settings)
    return rewriter


def mta_sts_gate(
    settings: Settings, resolver: Resolver, table: TlsPolicyTable
) -> MtaStsGate | None:
    """MTA-STS for MX routes when enabled and DNS is real (a static table has no TXT)."""
    if not settings.delivery.mta_sts or not isinstance(resolver, DnsResolver):
        return None
    context = verify_context(settings.delivery.tls_ca_file)
    store = policy_store(settings.queue)  # kept over restarts, shared by the nodes
    port = settings.delivery.mta_sts_port
    policies = MtaStsPolicies(resolver, context, port=port, store=store)
    return MtaStsGate(policies, table)


def dane_gate(settings: Settings, resolver: Resolver, table: TlsPolicyTable) -> DaneGate | None:
    """DANE for MX routes when ``delivery.dane`` is on (or a ``tls_policy`` entry asks for
    it) and DNS is real: the resolver then asks ``delivery.dane_nameservers`` and believes
    their AD bit (``routing.mx``)."""
    if not settings.delivery.dane_used:
        return None
    if not isinstance(resolver, DnsResolver):
        log.warning("delivery.dane is on, but dns.static_table has no DNSSEC: DANE is off")
        return None
    return DaneGate(resolver, table, everywhere=settings.delivery.dane != "off")


def build_agents(
    settings: Settings, tls_reports: TlsRecorder | None = None
) -> dict[Transport, DeliveryAgent]:
    """The SMTP and LMTP agents; ``tls_reports`` counts the SMTP sessions for RFC 8460
    reports (``tls_reporting.enabled``; the daemon's, kept across reloads)."""
    resolver, errors = resolver_from_settings(settings)
    for error in errors:
        log.error("DNS table: %s", error)
    timeouts = client_timeouts(settings)
    idle = settings.delivery.idle_connection_timeout
    tls_table = TlsPolicyTable(settings.delivery.tls_policy, settings.delivery.tls_default)
    sts = mta_sts_gate(settings, resolver, tls_table)
    recorder = tls_reports if settings.tls_reporting.enabled else None
    agents: dict[Transport, DeliveryAgent] = {
        Transport.SMTP: SmtpAgent(
            settings.hostname,
            resolver,
            timeouts=timeouts,
            idle_timeout=idle,
            port=settings.delivery.smtp_port,
            tls=tls_table,
            verify_context=verify_context(settings.delivery.tls_ca_file),
            credentials=relay_credentials(settings),
            plaintext_auth=settings.delivery.auth_plaintext,
            rewriter=outbound_rewriter(settings),
            mta_sts=sts,
            dane=dane_gate(settings, resolver, tls_table),
            sts_problem=sts.problem if sts is not None else None,
            tls_reports=recorder,
            arc=ArcSealing.from_settings(settings),
            tls_required_no=settings.delivery.tls_required_no,
        ),
        Transport.LMTP: LmtpAgent(settings.hostname, None, timeouts=timeouts, idle_timeout=idle),
    }
    return agents


def build_router(settings: Settings) -> Router:
    router, _ = Router.from_settings(settings)  # the table file logs its problems
    return router


def worker_share(settings: Settings, workers: int) -> Settings:
    """``delivery.max_concurrency`` and ``max_per_destination`` divided among ``workers``
    processes (at least one each). SMTP and LMTP deliveries are held to the daemon's
    limits exactly by ``manager.slots`` instead; this share sizes a worker's claims of due
    recipients (``max_concurrency`` x 4 loaded at once) and limits its local agent's writes
    and programs (so workers x the share, when the limit is below the number of workers)."""
    if workers <= 1:
        return settings
    d = settings.delivery
    share = {
        "max_concurrency": max(1, d.max_concurrency // workers),
        "max_per_destination": max(1, d.max_per_destination // workers),
    }
    return settings.model_copy(update={"delivery": d.model_copy(update=share)})


def scheduler_settings(settings: Settings) -> SchedulerSettings:
    q, d = settings.queue, settings.delivery
    return SchedulerSettings(
        max_concurrency=d.max_concurrency,
        max_per_destination=d.max_per_destination,
        lease_seconds=d.lease,
        host_status_timeout=q.host_status_timeout,
        reporting_mta=settings.hostname,
        double_bounce_recipient=q.double_bounce_recipient,
        retry=RetryPolicy(
            first=q.first_retry,
            max_interval=q.max_retry_interval,
            max_lifetime=q.max_lifetime,
            delay_warning=q.delay_warning,
        ),
    )


def build_scheduler(
    settings: Settings,
    store: QueueStore,
    writer: QueueWriter,
    router: Router | None = None,
    resolver: AddressResolver | None = None,
    deposit: Deposit | None = None,
) -> Scheduler:
    """The queue manager with every agent: SMTP, LMTP, and local delivery (mailboxes,
    programs, files) behind the alias ``Expander``; ``resolver`` is shared with the
    RCPT-time user check when the daemon passes one; ``deposit`` is the privileged
    helper's when the daemon gave up root."""
    router = router or build_router(settings)
    resolver = resolver or AddressResolver.from_settings(settings)
    parts = delivery_parts(settings, store, writer, router, resolver, deposit)
    return Scheduler(store, writer, parts)


def delivery_parts(
    settings: Settings,
    store: QueueStore,
    writer: QueueWriter,
    router: Router,
    resolver: AddressResolver,
    deposit: Deposit | None,
    workers: int = 1,
    tls_reports: TlsRecorder | None = None,
) -> DeliveryParts:
    """What a delivery uses: the route, every agent (read-only), the scheduling settings
    and the alias ``Expander`` over ``resolver``; for one of ``workers`` processes, with
    its share of the delivery limits."""
    limited = worker_share(settings, workers)
    agents = {
        **build_agents(settings, tls_reports),
        **local_agents(limited, resolver.users, deposit),
    }
    return DeliveryParts(
        route=lambda address: router.route(domain_of(address)),
        agents=MappingProxyType(agents),
        settings=scheduler_settings(limited),
        expander=Expander.from_settings(settings, store, writer, resolver=resolver),
    )


class _Standalone:
    """The queue opened by an admin command while no daemon runs."""

    def __init__(self, settings: Settings) -> None:
        self.store = queue_store(settings.queue)
        self.store.open(exclusive=clears_all_leases(settings.queue))
        self.writer = QueueWriter(self.store)
        self.writer.start()
        self.scheduler = build_scheduler(settings, self.store, self.writer)

    async def close(self) -> None:
        await self.scheduler.stop(grace=5)
        self.writer.stop()
        self.store.close()


async def run_queue_once(settings: Settings, queue_ids: Sequence[str] | None = None) -> int:
    """One queue run in the foreground (``sendmail -q`` without a daemon); with
    ``queue_ids``, a selective one (``-qI``): only those messages."""
    standalone = _Standalone(settings)
    try:
        return await standalone.scheduler.run_once(queue_ids)
    finally:
        await standalone.close()


async def bounce_messages(settings: Settings, ids: Sequence[str], reply: Reply) -> list[str]:
    """Fail the waiting recipients of ``ids`` with one bounce each; returns unknown ids."""
    try:
        standalone = _Standalone(settings)
    except StoreError as exc:
        raise SystemExit(f"mailwright: {exc}") from None
    missing = []
    try:
        for queue_id in ids:
            if not await standalone.scheduler.bounce(queue_id, reply):
                missing.append(queue_id)
    finally:
        await standalone.close()
    return missing
