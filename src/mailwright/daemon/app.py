"""Start-up and shutdown of the daemon: queue, writer, policy, listeners, signals.

Order matters for durability: the queue is opened (and checked) before any
listener accepts, and on SIGTERM listeners stop first, sessions finish, then
the writer drains its last commits before the store closes. A second SIGTERM
exits at once; nothing acknowledged is lost because every ``250`` followed a
commit. SIGHUP reloads the TLS certificate, the users file and the access table
(the last two are also reread when they change). Settings: all of them, via the
components it builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import signal
from pathlib import Path

from mailwright.config.schema import DeliveryMode, ListenerAuth, Settings
from mailwright.daemon import control
from mailwright.daemon.delivery import build_scheduler
from mailwright.daemon.monitor import Monitor
from mailwright.edge.context import EdgeContext
from mailwright.edge.listener import Edge
from mailwright.edge.local import LocalSubmission
from mailwright.edge.security import EdgeSecurity
from mailwright.policy import access
from mailwright.policy.filters.chain import build_filters
from mailwright.policy.hooks import Hook, Pipeline
from mailwright.policy.limits import ConnectionRateLimit
from mailwright.policy.recipients import LocalRecipients
from mailwright.policy.relay import DomainSet, RelayControl, parse_networks
from mailwright.policy.submission import SubmissionPolicy
from mailwright.policy.watched import WatchedFile
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage, NewMessage
from mailwright.queue.writer import QueueWriter
from mailwright.routing.aliases import prepare_aliases
from mailwright.routing.resolution import AddressResolver

log = logging.getLogger("mailwright.daemon")


def build_pipeline(
    settings: Settings,
    table: WatchedFile[access.AccessTable] | None = None,
    resolver: AddressResolver | None = None,
) -> Pipeline:
    """Policy hooks in order: connection rate, submission rules, access table, relay
    control, the local recipient check, then the configured filters.

    ``resolver`` (shared with the delivery side) answers which local recipients exist;
    one is built from the settings when not given.
    """
    if table is None and settings.access.table is not None:
        table = access.watch(settings.access.table)
    hooks: list[Hook] = []
    if settings.server.max_connection_rate_per_ip:
        hooks.append(
            ConnectionRateLimit(settings.server.max_connection_rate_per_ip, settings.hostname)
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
    local = LocalRecipients(resolver or AddressResolver.from_settings(settings))
    return Pipeline([*hooks, relay, local, *build_filters(settings)])


def warn_about_listeners(settings: Settings) -> None:
    """Configurations that start but cannot work as the operator probably expects."""
    for listener in settings.listeners:
        if listener.auth_mode is ListenerAuth.REQUIRE and settings.auth.users_file is None:
            log.warning(
                "listener %s requires AUTH but auth.users_file is not set: "
                "every MAIL will be refused",
                listener.display_name,
            )


class Daemon:
    monitor: Monitor | None = None  # metrics, the status page, the ``status`` request

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SqliteQueueStore(settings.queue.database)
        self.writer = QueueWriter(self.store)
        self.edge: Edge | None = None
        self.security = EdgeSecurity.from_settings(settings)  # a bad certificate stops here
        self.access = (
            access.watch(settings.access.table) if settings.access.table is not None else None
        )
        self.local: LocalSubmission | None = None
        # one view of aliases and users for the RCPT check and for delivery
        self.resolver = AddressResolver.from_settings(settings, build_missing=False)
        self.scheduler = build_scheduler(settings, self.store, self.writer, resolver=self.resolver)
        self.control = control.ControlServer(
            control.socket_path(settings.queue.directory),
            {"ping": self._ping, "wake": self._wake, "flush": self._flush},
        )
        self._stop = asyncio.Event()
        self._queue_run = asyncio.Event()
        self._terms = 0

    def prepare_directories(self) -> None:
        q = self.settings.queue
        for path in (q.directory, q.spool_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._clean_spool(q.spool_dir)
        self._prepare_mail_spool(self.settings.local_delivery.mail_spool)

    @staticmethod
    def _prepare_mail_spool(spool: Path) -> None:
        """Create a missing mail spool: private for a non-root daemon (``make run``),
        Debian's /var/mail layout (2775, group mail) as root."""
        if spool.exists():
            return
        if os.geteuid() != 0:
            spool.mkdir(parents=True, mode=0o700)
            return
        spool.mkdir(parents=True)
        with contextlib.suppress(KeyError, OSError):
            os.chown(spool, 0, grp.getgrnam("mail").gr_gid)
        spool.chmod(0o2775)

    @staticmethod
    def _clean_spool(spool_dir: Path) -> None:
        # spool files are anonymous; anything named here is a leftover of a crash
        for entry in spool_dir.iterdir():
            if entry.is_file():
                with contextlib.suppress(OSError):
                    entry.unlink()

    async def enqueue(self, message: NewMessage) -> None:
        await self.writer.execute(InsertMessage(message))
        if self.settings.delivery.mode is DeliveryMode.BACKGROUND:
            self.scheduler.wake()

    async def _ping(self, request: dict[str, object]) -> dict[str, object]:
        return {"ok": True, "pid": os.getpid()}

    async def _wake(self, request: dict[str, object]) -> dict[str, object]:
        """The queue changed (release, hold, delete): look again."""
        self.scheduler.wake()
        return {"ok": True}

    async def _flush(self, request: dict[str, object]) -> dict[str, object]:
        """Deliver what is due now, in either delivery mode (``queue flush``, ``-q``)."""
        self.scheduler.hosts.clear()  # a flush means: try now, even hosts we think are dead
        self._queue_run.set()
        self.scheduler.wake()
        return {"ok": True}

    async def _deliveries(self) -> None:
        """Background mode: the scheduler runs all the time. Queue-only mode: it runs
        when asked (``queue flush``) or every ``delivery.queue_run_interval``."""
        if self.settings.delivery.mode is DeliveryMode.BACKGROUND:
            await self.scheduler.run()
            return
        interval = self.settings.delivery.queue_run_interval or None
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(interval):
                    await self._queue_run.wait()
            except TimeoutError:
                pass
            self._queue_run.clear()
            if not self._stop.is_set():
                await self.scheduler.run_once()

    async def run(self) -> None:
        self.prepare_directories()
        prepare_aliases(self.settings)  # compiles an alias file that never was
        self.store.open()
        self.writer.start()
        try:
            warn_about_listeners(self.settings)
            ctx = EdgeContext(
                settings=self.settings,
                pipeline=build_pipeline(self.settings, self.access, self.resolver),
                enqueue=self.enqueue,
                spool_dir=self.settings.queue.spool_dir,
                security=self.security,
            )
            self.edge = Edge(ctx)
            await self.edge.start()
            self.local = LocalSubmission(ctx)  # the sendmail socket and the maildrop pickup
            await self.local.start()
            await self.control.start()
            await self._start_monitor()
            runner = asyncio.create_task(self._deliveries())
            self._install_signals()
            log.info(
                "mailwright ready (pid %d), queue %s", os.getpid(), self.settings.queue.directory
            )
            await self._stop.wait()
            log.info("shutting down")
            await asyncio.gather(self.edge.stop(), self.local.stop())
            grace = self.settings.server.timeouts.shutdown_grace
            await self.scheduler.stop(grace)
            await runner
            await self._stop_monitor()
            await self.control.stop()
        finally:
            self.writer.stop()
            self.store.close()
            log.info("stopped")

    # ---- metrics and status (daemon/monitor.py) ------------------------------------------
    async def _start_monitor(self) -> None:
        """Metrics, the per-minute history, the HTTP endpoint and the control socket's
        ``status`` request; after the listeners, whose sessions it counts."""
        handlers = self.control.handlers
        self.monitor = Monitor(
            self.settings, self.store, self.writer, handlers, self.edge, self.local
        )
        self.control.handlers["status"] = self.monitor.control_status
        await self.monitor.start()

    async def _stop_monitor(self) -> None:
        if self.monitor is not None:
            await self.monitor.stop()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_term)
        loop.add_signal_handler(signal.SIGINT, self._on_term)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_hup(self) -> None:
        log.info("SIGHUP: reloading TLS certificate, users file and access table")
        self.security.reload()
        if self.access is not None:
            self.access.reload()

    def _on_term(self) -> None:
        self._terms += 1
        if self._terms > 1:
            log.warning("second stop signal: exiting at once")
            os._exit(1)  # every 250 already followed a commit: nothing acknowledged is lost
        self._stop.set()
        self._queue_run.set()

    def request_stop(self) -> None:
        self._stop.set()


def run_daemon(settings: Settings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        asyncio.run(Daemon(settings).run())
        return
    uvloop.run(Daemon(settings).run())
