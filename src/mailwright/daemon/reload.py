"""SIGHUP: the configuration read again and put in place as a whole, or refused as a whole.

``load`` reads and validates the file, compiles the alias file if its table was not
built from it as it is now (another path, size or mtime), and builds everything that
depends on the settings before anything is replaced: the TLS certificate (into a
scratch context first), the users file and the access table, the address resolver
(aliases, virtual tables, .forward), the policy pipeline, the transport table, the
delivery agents. Any problem there (a TOML or
schema error, a certificate that does not load, a transport table with a bad line)
refuses the reload: it is logged and the old configuration stays in use. The
daemon then swaps the parts in (``daemon.app``): sessions already running keep the
context they started with, new sessions and new deliveries get the new one.

Some settings cannot change in a running daemon: the listeners (bound as root), the
queue directory, the local socket and maildrop, and ``service.user``/``group``/
``pid_file``. ``config.reloadable.effective_settings`` keeps their old values and names them, so the
log says that a restart is needed. Settings: all of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mailwright.config.loader import ConfigError, load_settings
from mailwright.config.reloadable import effective_settings
from mailwright.config.schema import Settings, TlsSection
from mailwright.daemon.delivery import build_agents, scheduler_settings
from mailwright.delivery.agent import DeliveryAgent
from mailwright.delivery.deposit import Deposit
from mailwright.delivery.local import local_agents
from mailwright.edge.security import EdgeSecurity
from mailwright.edge.tls import ServerTls, TlsSetupError, server_context
from mailwright.manager.expansion import Expander
from mailwright.manager.scheduler import SchedulerSettings
from mailwright.policy import access
from mailwright.policy.auth import Authenticator
from mailwright.policy.limits import AuthThrottle
from mailwright.policy.watched import WatchedFile
from mailwright.queue.store import QueueStore
from mailwright.queue.writer import QueueWriter
from mailwright.routing.aliases import prepare_aliases
from mailwright.routing.nexthop import Transport
from mailwright.routing.resolution import AddressResolver
from mailwright.routing.router import Router

log = logging.getLogger("mailwright.daemon")


class ReloadError(ConfigError):
    """The new configuration cannot be used; the old one stays."""


@dataclass(slots=True)
class Parts:
    """Everything built from the new settings, ready to be swapped in."""

    settings: Settings
    kept: list[str]
    security: EdgeSecurity
    access: WatchedFile[access.AccessTable] | None
    resolver: AddressResolver
    router: Router
    agents: dict[Transport, DeliveryAgent]
    expander: Expander
    scheduling: SchedulerSettings


def load(config_path: Path | None, current: Settings) -> tuple[Settings, list[str]]:
    """Read and validate the file (blocking: run it in a thread); ``ReloadError``."""
    try:
        fresh = load_settings(config_path)
    except ConfigError as exc:
        raise ReloadError(str(exc)) from None
    settings, kept = effective_settings(current, fresh)
    refresh_aliases(settings)
    return settings, kept


def refresh_aliases(settings: Settings) -> None:
    """``newaliases`` on SIGHUP: compile the alias file when its table was not built from
    it as it is now (another file, size or mtime: ``routing.aliases.out_of_date``)."""
    prepare_aliases(settings)


def build_parts(
    settings: Settings,
    kept: list[str],
    *,
    security: EdgeSecurity,
    table: WatchedFile[access.AccessTable] | None,
    store: QueueStore,
    writer: QueueWriter,
    deposit: Deposit | None,
) -> Parts:
    """The new parts (``ReloadError`` when one cannot be built); nothing is swapped yet."""
    new_security = retune_security(security, settings)
    new_table = _access_table(table, settings)
    resolver = AddressResolver.from_settings(settings, build_missing=False)
    router, errors = Router.from_settings(settings)
    if errors:
        raise ReloadError("; ".join(str(e) for e in errors[:5]))
    agents = {**build_agents(settings), **local_agents(settings, resolver.users, deposit)}
    expander = Expander.from_settings(settings, store, writer, resolver=resolver)
    return Parts(
        settings=settings,
        kept=kept,
        security=new_security,
        access=new_table,
        resolver=resolver,
        router=router,
        agents=agents,
        expander=expander,
        scheduling=scheduler_settings(settings),
    )


def retune_security(current: EdgeSecurity, settings: Settings) -> EdgeSecurity:
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
        throttle=throttle or AuthThrottle(settings.auth),  # kept: failure counters survive
    )


def retune_tls(current: ServerTls | None, section: TlsSection) -> ServerTls:
    if section.certificate is None:
        return ServerTls(section)  # no certificate: STARTTLS is no longer offered
    try:
        fresh = server_context(section)  # a scratch load: is the new pair usable?
    except TlsSetupError as exc:
        log.error("TLS reload failed, keeping the previous certificate: %s", exc)
        raise ReloadError(f"tls: {exc}") from None
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


def _access_table(
    table: WatchedFile[access.AccessTable] | None, settings: Settings
) -> WatchedFile[access.AccessTable] | None:
    path = settings.access.table
    if path is None:
        return None
    if table is not None and table.path == path:
        table.reload()  # a table with bad lines keeps its good ones, as at any time
        return table
    return access.watch(path)
