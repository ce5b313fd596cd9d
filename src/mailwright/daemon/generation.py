"""The composition root: one generation of the daemon's parts, built from ``Settings``.

``build_generation`` is the only place where the daemon turns settings into objects, at
start-up and on every SIGHUP: plugin options are checked (filter plugins, milter
endpoints, DNS blocklist zones and reply), the transport table is read, then the address
resolver (aliases, virtual tables, .forward), the access table, the policy pipeline, the
delivery agents and the alias expander are built, and the TLS certificate and users
file are loaded last. A problem raises ``GenerationError`` (a ``ConfigError``): at
start-up the daemon exits 78 (EX_CONFIG); on SIGHUP the reload is refused and the old
generation stays in use.

A generation is immutable; the daemon replaces it as a whole. An SMTP session keeps the
generation of its connect (through its ``EdgeContext``), a delivery the one current
when it started (``DeliveryParts``, held by the scheduler for its task).

Two things are carried over from the previous generation on reload rather than made
anew: the live TLS context (implicit-TLS listeners hold it: the new certificate is
loaded into it, after a scratch load proved it usable) and the AUTH failure counters
when ``[auth]`` is unchanged; an access table or users file at the same path is read
again in place. Start-up and reload differ in one documented way: a transport table line
that does not parse is logged and skipped at start-up (docs/routing.md), and refuses a
reload. Settings: all of them, through the parts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mailwright.config.dnsbl import parse_reply, parse_zone
from mailwright.config.endpoint import parse_endpoint
from mailwright.config.loader import ConfigError
from mailwright.config.schema import (
    ListenerAuth,
    ListenerTls,
    MilterFilter,
    Settings,
    TlsSection,
)
from mailwright.core.domains import DomainSet
from mailwright.core.watchedfile import WatchedFile
from mailwright.daemon.delivery import delivery_parts
from mailwright.delivery.deposit import Deposit
from mailwright.edge.security import EdgeSecurity
from mailwright.edge.tls import ServerTls, TlsSetupError, server_context
from mailwright.manager.scheduler import DeliveryParts
from mailwright.policy import access, arc, dmarc, dnsbl, spf
from mailwright.policy.auth import Authenticator
from mailwright.policy.dmarc_failures import Enqueue
from mailwright.policy.filters import registry
from mailwright.policy.filters.chain import build_filters
from mailwright.policy.hooks import Hook, Pipeline
from mailwright.policy.limits import AuthThrottle, ConnectionRateLimit, cluster_limits
from mailwright.policy.recipients import LocalRecipients
from mailwright.policy.relay import RelayControl, parse_networks
from mailwright.policy.sharedlimits import WorkerShare
from mailwright.policy.submission import SubmissionPolicy
from mailwright.queue.backend import queue_store
from mailwright.queue.store import QueueStore
from mailwright.queue.writer import QueueWriter
from mailwright.routing.clientname import ClientNames, client_names_from_settings
from mailwright.routing.resolution import AddressResolver
from mailwright.routing.router import Router
from mailwright.routing.tlsrpt import TlsRecorder

log = logging.getLogger("mailwright.daemon")

AccessTable = WatchedFile[access.AccessTable]


class GenerationError(ConfigError):
    """The settings cannot be turned into a working daemon."""


@dataclass(frozen=True, slots=True)
class Generation:
    """Everything built from one version of the settings."""

    settings: Settings
    security: EdgeSecurity  # STARTTLS, AUTH
    access: AccessTable | None
    resolver: AddressResolver  # shared by the RCPT check and local delivery
    router: Router
    pipeline: Pipeline  # the policy hooks of a session
    client_names: ClientNames | None
    delivery: DeliveryParts  # route, agents, expander, scheduling: what a delivery uses


def build_generation(
    settings: Settings,
    *,
    store: QueueStore,
    writer: QueueWriter,
    deposit: Deposit | None,
    previous: Generation | None = None,
    share: WorkerShare | None = None,
    workers: int = 1,
    tls_reports: TlsRecorder | None = None,
    enqueue: Enqueue | None = None,
) -> Generation:
    """The parts for ``settings``; ``previous`` is the running generation on reload;
    ``share`` the counters the worker processes share (None: one process), ``workers``
    how many there are (each delivers with its share of the delivery limits),
    ``tls_reports`` the daemon's TLS session counts (RFC 8460), kept across reloads,
    ``enqueue`` the daemon's way into the queue for mail it makes (DMARC failure reports).
    Nothing running is touched before everything else is built (the certificate goes
    into the live TLS context last)."""
    check_plugins(settings)
    warn_about_listeners(settings)
    router = _router(settings, strict=previous is not None)
    resolver = AddressResolver.from_settings(settings, build_missing=False)
    table = _access_table(previous.access if previous else None, settings)
    try:
        pipeline = build_pipeline(settings, table, resolver, share, enqueue)
    except (ValueError, OSError) as exc:  # a filter that cannot be set up
        raise GenerationError(f"filters: {exc}") from None
    delivery = delivery_parts(
        settings, store, writer, router, resolver, deposit, workers, tls_reports
    )
    if previous is None:
        security = EdgeSecurity.from_settings(settings, share)  # a bad certificate stops here
    else:
        security = retune_security(previous.security, settings, share)
    return Generation(
        settings=settings,
        security=security,
        access=table,
        resolver=resolver,
        router=router,
        pipeline=pipeline,
        client_names=client_names_from_settings(settings),
        delivery=delivery,
    )


# ---- validation across modules ------------------------------------------------------------


def check_generation(settings: Settings) -> None:
    """Build, and throw away, the parts of ``settings`` as a reload would (strictly), on
    a store that is never opened: the supervisor's check before its workers reload, so
    that they all take the new configuration or none does. ``GenerationError``,
    ``ConfigError`` or ``OSError`` when it cannot be used."""
    store = queue_store(settings.queue)
    build_generation(settings, store=store, writer=QueueWriter(store), deposit=None)
    _router(settings, strict=True)


def check_plugins(settings: Settings) -> None:
    """The options the configuration schema cannot judge alone: the filter plugins (their
    own option models), the milter endpoints, the DNS blocklist zones and reply."""
    for number, entry in enumerate(settings.filters, start=1):
        where = f"filters[{number}] ({entry.display_name})"
        try:
            if isinstance(entry, MilterFilter):
                parse_endpoint(entry.milter)
            else:
                registry.validate_options(entry.plugin, entry.options)
        except ValueError as exc:
            raise GenerationError(f"{where}: {exc}") from None
    try:
        for zone in settings.dnsbl.zones:
            parse_zone(zone)
        parse_reply(settings.dnsbl.reply)
    except ValueError as exc:
        raise GenerationError(f"dnsbl: {exc}") from None


def _router(settings: Settings, *, strict: bool) -> Router:
    """The transport table: bad lines are logged and skipped at start-up (the other
    entries work), and refuse a reload (the table in use is complete)."""
    router, errors = Router.from_settings(settings)  # the table file logs its problems
    if errors and strict:
        raise GenerationError("; ".join(str(e) for e in errors[:5]))
    return router


def warn_about_listeners(settings: Settings) -> None:
    """Configurations that start but cannot work as the operator probably expects."""
    if (idle := dmarc.idle_reports_warning(settings)) is not None:
        log.warning("%s", idle)
    for listener in settings.listeners:
        if listener.auth_mode is ListenerAuth.REQUIRE and settings.auth.users_file is None:
            log.warning(
                "listener %s requires AUTH but auth.users_file is not set: "
                "every MAIL will be refused",
                listener.display_name,
            )
        if (
            listener.tls is ListenerTls.STARTTLS
            and listener.tls_required
            and settings.tls.certificate is None
        ):
            log.warning(
                "listener %s requires TLS before MAIL but [tls] certificate is not set:"
                " STARTTLS is never offered, every MAIL will be refused (530 5.7.0)",
                listener.display_name,
            )


# ---- the parts ------------------------------------------------------------------------------


def build_pipeline(
    settings: Settings,
    table: AccessTable | None = None,
    resolver: AddressResolver | None = None,
    share: WorkerShare | None = None,
    enqueue: Enqueue | None = None,
) -> Pipeline:
    """Policy hooks in order: connection rate, submission rules, access table, relay
    control, DNS blocklists, SPF, ARC, the local recipient check, the configured filters,
    DMARC (``enqueue`` queues its failure reports).

    ``resolver`` (shared with the delivery side) answers which local recipients exist;
    one is built from the settings when not given. ``share``: the connection rate is
    counted across the worker processes; with ``queue.backend = "postgresql"`` across
    the nodes, in the shared database.
    """
    if table is None and settings.access.table is not None:
        table = access.watch(settings.access.table)
    hooks: list[Hook] = []
    if settings.server.max_connection_rate_per_ip:
        hooks.append(
            ConnectionRateLimit(
                settings.server.max_connection_rate_per_ip,
                settings.hostname,
                share=share,
                cluster=cluster_limits(settings.queue),  # the nodes' database, if shared
            )
        )
    hooks.append(SubmissionPolicy.from_settings(settings))
    if table is not None:
        hooks.append(access.AccessControl(table, settings.hostname))
    relay = RelayControl(
        DomainSet(settings.local_domains),
        DomainSet([*settings.relay.domains, *settings.routing.virtual_domains]),
        parse_networks(settings.relay.networks),
        table.current if table is not None else None,
    )
    # after relay control, which marks the trusted clients the blocklists skip
    blocklists = dnsbl.from_settings(settings, table.current if table is not None else None)
    hooks_after_relay: list[Hook] = [blocklists] if blocklists is not None else []
    if (sender_policy := spf.from_settings(settings)) is not None:
        hooks_after_relay.append(sender_policy)
    if (chain_check := arc.from_settings(settings)) is not None:
        hooks_after_relay.append(chain_check)  # at end of data, before the filters' dkim=
    local = LocalRecipients(resolver or AddressResolver.from_settings(settings))
    # DMARC at end of data after the filters, so after dkim_verify's results
    last: list[Hook] = [h for h in [dmarc.from_settings(settings, enqueue, share)] if h is not None]
    return Pipeline([*hooks, relay, *hooks_after_relay, local, *build_filters(settings), *last])


def _access_table(previous: AccessTable | None, settings: Settings) -> AccessTable | None:
    path = settings.access.table
    if path is None:
        return None
    if previous is not None and previous.path == path:
        previous.reload()  # a table with bad lines keeps its good ones, as at any time
        return previous
    return access.watch(path)


def retune_security(
    current: EdgeSecurity, settings: Settings, share: WorkerShare | None = None
) -> EdgeSecurity:
    """TLS and AUTH for new sessions. The certificate goes into the live context in
    place (implicit-TLS listeners hold it), after a scratch load proved it usable."""
    tls = retune_tls(current.tls, settings.tls)
    users = settings.auth.users_file
    authenticator = current.authenticator
    if users is None:
        authenticator = None
    elif authenticator is None or authenticator.users.path != users:
        authenticator = Authenticator.from_file(users, settings.auth.max_concurrent_checks)
    else:
        authenticator.users.reload()
    throttle = current.throttle if settings.auth == current.settings.auth else None
    return EdgeSecurity(
        settings,
        tls=tls,
        authenticator=authenticator,
        # kept: failure counters survive (shared ones live in the workers' memory anyway)
        throttle=throttle
        or AuthThrottle(settings.auth, share=share, cluster=cluster_limits(settings.queue)),
    )


def retune_tls(current: ServerTls | None, section: TlsSection) -> ServerTls:
    if section.certificate is None:
        return ServerTls(section)  # no certificate: STARTTLS is no longer offered
    try:
        fresh = server_context(section)  # a scratch load: is the new pair usable?
    except TlsSetupError as exc:
        log.error("TLS reload failed, keeping the previous certificate: %s", exc)
        raise GenerationError(f"tls: {exc}") from None
    if current is None or current.context is None:
        tls = ServerTls(TlsSection())
        tls.section, tls.context = section, fresh
        log.info("TLS certificate loaded from %s", section.certificate)
        return tls
    live = current.context
    live.minimum_version = fresh.minimum_version
    if section.ciphers:
        live.set_ciphers(section.ciphers)
    live.load_cert_chain(section.certificate, section.key)
    current.section = section
    log.info("TLS certificate reloaded from %s", section.certificate)
    return current
