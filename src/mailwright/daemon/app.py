"""Start-up and shutdown of the daemon: queue, writer, policy, listeners, signals.

Order matters for durability: the queue is opened (and checked) before any
listener accepts, and on SIGTERM listeners stop first, sessions finish, then
the writer drains its last commits before the store closes. A second SIGTERM
exits at once; nothing acknowledged is lost because every ``250`` followed a
commit. The parts built from the settings (policy, routing, delivery agents, TLS) form
one immutable generation (``daemon.generation``), built by the same function at start-up
and on SIGHUP (``daemon.reload`` reads the file again): a bad configuration stops the
start (EX_CONFIG) or is refused on reload and logged, the old generation staying in use.
A session keeps the generation of its connect, a delivery the one of its start. SIGHUP
and SIGUSR1 reopen the log file (``[log] file``) for logrotate.

``daemon.launch`` prepares what a service needs before the daemon runs
(``daemon.runtime.Runtime``): sockets bound as root, the privileged helper that local
delivery and the maildrop pickup use once root is given up, and the sd_notify
reports (``READY=1``, ``RELOADING=1``, ``STOPPING=1``). Settings: all of them, via
the components it builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from mailwright.config.loader import ConfigError
from mailwright.config.schema import DeliveryMode, Settings
from mailwright.core import deliverymode, queueid
from mailwright.core.sysexits import ExitCode
from mailwright.daemon import control, reload
from mailwright.daemon.admin import Admin
from mailwright.daemon.generation import Generation, build_generation
from mailwright.daemon.heartbeat import Heartbeat
from mailwright.daemon.monitor import Monitor
from mailwright.daemon.queueruns import QueueRuns
from mailwright.daemon.runtime import Runtime
from mailwright.daemon.tlsreports import TlsReporting
from mailwright.delivery.deposit import Deposit
from mailwright.edge.context import EdgeContext
from mailwright.edge.listener import Edge
from mailwright.edge.local import LocalSubmission
from mailwright.edge.pickup import MaildropAccess
from mailwright.manager.hoststatus import host_status
from mailwright.manager.scheduler import Scheduler
from mailwright.observability import logtargets
from mailwright.policy import dmarc_reports
from mailwright.privhelper.client import HelperDeposit, HelperForwardReader, HelperMaildrop
from mailwright.queue.admin import ACTIONS as ADMIN_ACTIONS
from mailwright.queue.admin import Actor, Selection
from mailwright.queue.backend import clears_all_leases, queue_store
from mailwright.queue.store import (
    NO_LEASE,
    InsertMessage,
    NewMessage,
    ReleaseProcessLeases,
    StoreError,
)
from mailwright.queue.writer import QueueWriter
from mailwright.routing.aliases import prepare_aliases
from mailwright.routing.resolution import AddressResolver
from mailwright.routing.tlsrpt import TlsRecorder

log = logging.getLogger("mailwright.daemon")

# how long a ``sendmail -odi`` submission waits for its delivery attempt before it gets
# its 250 anyway (the message is queued either way); well under the client's timeout
INTERACTIVE_WAIT = 60
# how an admin request may say it came (a metric label: anything else is "control socket")
CONTROL_VIAS = ("mailwright queue", "sendmail -q")
# a worker takes stop signals this close to its first one for that same one, repeated
SIGNAL_ECHO = 2.0


class Daemon:
    monitor: Monitor | None = None  # metrics, the status page, the ``status`` request

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.runtime = runtime or Runtime()
        # the workers of one daemon write one SQLite file: they take turns through a gate
        shared = self.runtime.worker is not None
        self.store = queue_store(settings.queue, shared=shared)
        self.writer = QueueWriter(self.store)
        self.edge: Edge | None = None
        self.local: LocalSubmission | None = None
        # RFC 8460 session counts: the daemon's, so a reload does not lose them
        self.tls_recorder = TlsRecorder()
        # the parts built from the settings: replaced as a whole on SIGHUP
        self.generation = build_generation(
            settings,
            store=self.store,
            writer=self.writer,
            deposit=self._deposit(settings),
            share=self.runtime.share,
            workers=self._workers,
            tls_reports=self.tls_recorder,
            enqueue=self.enqueue,
        )
        timeout = self.generation.delivery.settings.host_status_timeout
        hosts = host_status(settings.queue, timeout)  # shared by the nodes with PostgreSQL
        self.scheduler = Scheduler(
            self.store,
            self.writer,
            self.generation.delivery,
            hosts=hosts,
            slots=self.runtime.delivery_slots,
        )
        self.admin = Admin(self.store, self.writer, self._notify, self.scheduler.bounce)
        self.control = control.ControlServer(
            control.socket_path(settings.queue.directory),
            {"ping": self._ping, "wake": self._wake, "flush": self._flush, "admin": self._admin},
        )
        self._stop = asyncio.Event()
        self._queue_runs = QueueRuns()
        self._terms = 0
        self._first_term = -math.inf
        self.exit_code = ExitCode.OK  # what the process exits with after a clean stop
        self._reloads: asyncio.Task[None] | None = None
        self._reload_again = False
        self.tls_reports = TlsReporting(
            lambda: self.settings, self.tls_recorder, enqueue=self.enqueue, sends=self.singleton
        )
        self.control.handlers["tlsrpt"] = self.tls_reports.control

    def prepare_directories(self) -> None:
        q = self.settings.queue
        for path in (q.directory, q.spool_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.runtime.worker is None:  # the supervisor did, before its workers started
            self.clean_spool(q.spool_dir)
        self._prepare_mail_spool(self.settings.local_delivery.mail_spool)

    @staticmethod
    def _prepare_mail_spool(spool: Path) -> None:
        """Create a missing mail spool: private for a non-root daemon (``make run``),
        Debian's /var/mail layout (2775, group mail) as root."""
        if spool.exists():
            return
        # exist_ok: the workers start together and may both find it missing
        if os.geteuid() != 0:
            spool.mkdir(parents=True, mode=0o700, exist_ok=True)
            return
        spool.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(KeyError, OSError):
            os.chown(spool, 0, grp.getgrnam("mail").gr_gid)
        spool.chmod(0o2775)

    @staticmethod
    def clean_spool(spool_dir: Path) -> None:
        # spool files are anonymous; anything named here is a leftover of a crash
        for entry in spool_dir.iterdir():
            if entry.is_file():
                with contextlib.suppress(OSError):
                    entry.unlink()

    async def enqueue(self, message: NewMessage) -> None:
        """Queue a message (the commit is durable on return), then start its delivery.

        A local submission may ask for a delivery mode (``core.deliverymode``): queue
        only (``sendmail -odq``: first due after ``delivery.queue_run_interval``, else
        ``queue.first_retry``, so the next queue run takes it) or interactive
        (``sendmail -odi``: one attempt now, awaited up to ``INTERACTIVE_WAIT`` before
        the submitter gets its 250).
        """
        asked = deliverymode.take(message.headers) if message.origin.local_user else None
        if asked == deliverymode.QUEUE:
            delivery = self.settings.delivery
            wait = delivery.queue_run_interval or self.settings.queue.first_retry
            message.first_attempt = message.received_at + wait
        background = asked is None and self.settings.delivery.mode is DeliveryMode.BACKGROUND
        lease = self.scheduler.lease_new(message) if background else None
        if lease is not None:  # inserted claimed by this process: deliver it at once
            await self.scheduler.insert_and_start(message, lease)
            return
        await self.writer.execute(InsertMessage(message, *NO_LEASE))
        if asked == deliverymode.INTERACTIVE:
            await self._deliver_interactively(message.queue_id)
        elif background:
            self.scheduler.remember(message)
            self.scheduler.wake()

    async def _deliver_interactively(self, queue_id: str) -> None:
        attempt = asyncio.ensure_future(self.scheduler.deliver_now(queue_id))
        try:
            async with asyncio.timeout(INTERACTIVE_WAIT):
                await asyncio.shield(attempt)  # past the wait, it goes on without us
        except TimeoutError:
            log.info("%s: interactive delivery still going after %ds", queue_id, INTERACTIVE_WAIT)
        except Exception:
            log.exception("%s: interactive delivery failed", queue_id)

    async def _release_stale_leases(self, processes: tuple[str, ...]) -> int:
        """Another node stopped beating: its processes' leases go back, due now."""
        released = await self.writer.execute(ReleaseProcessLeases(processes))
        if released:
            self._wake_all()
        return released

    async def _ping(self, request: dict[str, object]) -> dict[str, object]:
        return {"ok": True, "pid": os.getpid()}

    async def _wake(self, request: dict[str, object]) -> dict[str, object]:
        """The queue changed (release, hold, delete): look again."""
        self._wake_all()
        return {"ok": True}

    async def _flush(self, request: dict[str, object]) -> dict[str, object]:
        """Deliver what is due now (``queue flush``, ``-q``), in either delivery mode.

        ``queue_ids`` (a list) names the messages of a selective run (``-qI``, ``queue
        flush ID``); without it the run is a full one. The caller made them due first.
        In background mode everything due is delivered anyway: the scheduler just looks.
        """
        ids = request.get("queue_ids")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            return {"ok": False, "error": "queue_ids must be a list of queue ids"}
        self.scheduler.hosts.clear()  # a flush means: try now, even hosts we think are dead
        self._queue_runs.ask(ids)
        self._wake_all()
        return {"ok": True}

    def _wake_all(self) -> None:
        """Wake this scheduler and, through the supervisor (SIGUSR2), every worker's:
        what was made due now is shared out at once, not when each next looks."""
        self.scheduler.wake()
        if self.runtime.worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(os.getppid(), signal.SIGUSR2)

    async def _admin(self, request: dict[str, object]) -> dict[str, object]:
        """``mailwright queue hold|release|delete|bounce|flush`` (``daemon.admin``): done
        here, logged with the caller's user name (from the socket, not from the request)."""
        action = request.get("action")
        reason = request.get("reason") or ""
        try:
            if action not in ADMIN_ACTIONS or not isinstance(reason, str):
                raise ValueError(f"unknown queue action {action!r}")
            selection = Selection.from_json(request.get("selection", {}))
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        via = request.get("via")
        uid = request.get("peer_uid")
        via = via if isinstance(via, str) and via in CONTROL_VIAS else "control socket"
        actor = Actor.from_uid(uid, via) if isinstance(uid, int) else Actor("unknown", via)
        result = await self.admin.act(str(action), selection, actor, reason)
        return {"ok": True, "result": result.as_json()}

    async def _notify(self, op: str, args: dict[str, Any]) -> None:
        """What an admin action tells the scheduler: look again, or run the queue."""
        if op == "flush":
            await self._flush({"op": "flush", **args})
        else:
            await self._wake({"op": "wake"})

    async def _deliveries(self) -> None:
        """Background mode: the scheduler runs all the time. Queue-only mode: it runs
        only in queue runs, when asked (``queue flush``, ``-q``; full or selective) or
        every ``delivery.queue_run_interval`` (full)."""
        if self.settings.delivery.mode is DeliveryMode.BACKGROUND:
            await self.scheduler.run()
            return
        interval = self.settings.delivery.queue_run_interval or None
        while not self._stop.is_set():
            run = await self._queue_runs.next(interval)
            if run is None or self._stop.is_set():
                continue
            kind = "full" if run.queue_ids is None else f"{len(run.queue_ids)} message(s)"
            try:
                tried = await self.scheduler.run_once(run.queue_ids)
            except StoreError as exc:  # the database is away: the next run tries again
                log.warning("queue run (%s) failed: %s", kind, exc)
                continue
            log.info("queue run (%s) done: %d recipient(s) tried", kind, tried)

    @property
    def _workers(self) -> int:
        return self.runtime.worker.count if self.runtime.worker is not None else 1

    @property
    def singleton(self) -> bool:
        """Does this process run what exists once per daemon (the control socket, the
        status endpoint, the local submission socket, the maildrop pickup)? The only
        process does, and worker 0 of several."""
        worker = self.runtime.worker
        return worker is None or worker.first

    async def run(self) -> None:
        worker = self.runtime.worker
        if worker is not None:  # on PostgreSQL the store's id slot replaces it at open
            queueid.use_partition(worker.index, worker.count)
        self._start_helper()
        self.prepare_directories()
        prepare_aliases(self.settings)  # compiles an alias file whose table is missing or stale
        # the only process clears every lease it finds (left by a crash); a worker leaves
        # its siblings' alone and clears only those of owners that died, and so does a
        # daemon on a database other hosts share (their leases expire)
        self.store.open(exclusive=worker is None and clears_all_leases(self.settings.queue))
        self.writer.start()
        try:
            ctx = self._edge_context(self.generation)
            bindings = self.runtime.bindings
            self.edge = Edge(
                ctx,
                bound=bindings.listeners if bindings else None,
                share=self.runtime.share,
                standby=self.runtime.standby,
            )
            await self.edge.start()
            if self.singleton:  # the sendmail socket and the maildrop pickup
                self.local = LocalSubmission(
                    ctx, bindings.local if bindings else None, self._maildrop_access()
                )
                await self.local.start()
                await self.control.start()
                await self._start_monitor()
            elif bindings is not None and bindings.local is not None:
                bindings.local.close()  # worker 0's to serve
            heartbeat = Heartbeat(
                self.settings,
                self.store,
                first=self.singleton,
                workers=self._workers,
                release=self._release_stale_leases,
            )
            await heartbeat.start(self._listeners_text)
            self.tls_reports.start()
            runner = asyncio.create_task(self._deliveries())
            reports = self._start_dmarc_reports()
            self._install_signals()
            if worker is None:
                log.info(
                    "mailwright ready (pid %d), queue %s",
                    os.getpid(),
                    self.settings.queue.directory,
                )
            else:  # the supervisor says "mailwright ready" once every worker is
                log.info("worker %d of %d ready (pid %d)", worker.index, worker.count, os.getpid())
            self.runtime.notifier.ready(self._status())
            await self._stop.wait()
            log.info("shutting down")
            self.runtime.notifier.stopping("stopping: finishing sessions and deliveries")
            await asyncio.gather(self.edge.stop(), *([self.local.stop()] if self.local else []))
            grace = self.settings.server.timeouts.shutdown_grace
            await self.scheduler.stop(grace)
            await runner
            await self.tls_reports.stop()  # the last counts, while the store is open
            if reports is not None:
                await reports
            await heartbeat.stop()
            if self.singleton:
                await self._stop_monitor()
                await self.control.stop()
        finally:
            self.writer.stop()
            self.store.close()
            await self._stop_helper()
            log.info("stopped")

    def _start_dmarc_reports(self) -> asyncio.Task[None] | None:
        """DMARC aggregate reports: worker 0 sends them (one node, by the store's claim)."""
        if not (self.singleton and self.settings.dmarc.enabled and self.settings.dmarc.reports):
            return None
        return asyncio.create_task(
            dmarc_reports.run_forever(self.settings, self.enqueue, self._stop)
        )

    # ---- metrics and status (daemon/monitor.py) ------------------------------------------
    async def _start_monitor(self) -> None:
        """Metrics, the per-minute history, the HTTP endpoint and the control socket's
        ``status`` request; after the listeners, whose sessions it counts."""
        handlers = self.control.handlers
        self.monitor = Monitor(
            self.settings, self.store, self.writer, handlers, self.edge, self.local, self.admin
        )
        self.control.handlers["status"] = self.monitor.control_status
        await self.monitor.start()

    async def _stop_monitor(self) -> None:
        if self.monitor is not None:
            await self.monitor.stop()

    @property
    def settings(self) -> Settings:
        return self.generation.settings

    def _edge_context(self, generation: Generation) -> EdgeContext:
        """What the sessions of ``generation`` share; a session keeps the one of its
        connect to its end."""
        settings = generation.settings
        return EdgeContext(
            settings=settings,
            pipeline=generation.pipeline,
            enqueue=self.enqueue,
            spool_dir=settings.queue.spool_dir,
            security=generation.security,
            client_names=generation.client_names,
            deliveries=self.scheduler
            if settings.delivery.mode is DeliveryMode.BACKGROUND
            else None,
        )

    def _listeners_text(self) -> str:
        return ", ".join(f"{a}:{p}" for a, p in self.edge.addresses) if self.edge else ""

    def _status(self) -> str:
        return f"accepting mail on {self._listeners_text() or 'no TCP listener'}"

    # ---- the privileged helper (a daemon that gave up root) --------------------------------
    def _deposit(self, settings: Settings) -> Deposit | None:
        """Local delivery's writes: through the helper, or in process (None)."""
        helper = self.runtime.helper
        if helper is None:
            return None
        ld = settings.local_delivery
        return HelperDeposit(helper, ld.pipe_timeout, ld.lock_timeout)

    def _maildrop_access(self) -> MaildropAccess | None:
        helper = self.runtime.helper
        return HelperMaildrop(helper) if helper is not None else None

    def _start_helper(self) -> None:
        if self.runtime.helper is not None:
            self.runtime.helper.on_failure = self._helper_lost
            self.runtime.helper.start()
            self._wire_resolver(self.generation.resolver)

    def _helper_lost(self, why: str) -> None:
        """Without root no new helper can be started: stop cleanly with EX_TEMPFAIL, so
        that systemd (Restart=on-failure) starts daemon and helper again. Queued mail
        stays queued; local deliveries meanwhile are deferred, never lost."""
        if self._stop.is_set():
            return
        log.critical("%s: stopping, to be restarted by the service manager (exit 75)", why)
        self.exit_code = ExitCode.TEMPFAIL
        self.request_stop()

    def _wire_resolver(self, resolver: AddressResolver) -> None:
        """Users' .forward files are read by the helper (homes may be closed to us)."""
        if self.runtime.helper is not None:
            loop = asyncio.get_running_loop()
            resolver.read_forward = HelperForwardReader(self.runtime.helper, loop)

    async def _stop_helper(self) -> None:
        if self.runtime.helper is not None:
            await self.runtime.helper.close()  # the helper exits when its channel closes

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_term)
        loop.add_signal_handler(signal.SIGINT, self._on_term)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        loop.add_signal_handler(signal.SIGUSR1, self._on_usr1)
        if self.runtime.worker is not None:  # the supervisor's "look at the queue now"
            loop.add_signal_handler(signal.SIGUSR2, self.scheduler.wake)

    def _on_usr1(self) -> None:
        """logrotate moved the log file: write to a new one at its path."""
        path = logtargets.reopen()
        if path is not None:
            log.info("SIGUSR1: log file %s reopened", path)

    def _on_hup(self) -> None:
        logtargets.reopen()  # SIGHUP reopens the log file too, even if the reload is refused
        if self._reloads is not None and not self._reloads.done():
            self._reload_again = True  # one more round once this one is done
            return
        self._reloads = asyncio.create_task(self._reload_rounds(), name="reload")

    # ---- SIGHUP: the configuration again ------------------------------------------------------
    async def _reload_rounds(self) -> None:
        while True:
            self._reload_again = False
            await self.reload_configuration()
            if not self._reload_again or self._stop.is_set():
                return

    async def reload_configuration(self) -> bool:
        """Read the configuration again and use it; False (and logged) when refused."""
        path = self.runtime.config_path
        log.info("SIGHUP: reloading the configuration from %s", path or "built-in defaults")
        notifier = self.runtime.notifier
        notifier.reloading()
        try:
            settings, kept = await asyncio.to_thread(reload.load, path, self.settings)
            generation = build_generation(
                settings,
                store=self.store,
                writer=self.writer,
                deposit=self._deposit(settings),
                previous=self.generation,
                share=self.runtime.share,
                workers=self._workers,
                tls_reports=self.tls_recorder,
                enqueue=self.enqueue,
            )
        except (ConfigError, OSError) as exc:  # ReloadError, GenerationError
            log.error("SIGHUP: configuration refused, the previous one stays in use: %s", exc)
            notifier.ready(f"configuration refused: {str(exc).splitlines()[0]}")
            return False
        self._install(generation)
        if self.runtime.helper is not None:
            await self._reload_helper()
        for name in kept:
            log.warning("SIGHUP: %s changed: takes effect at the next restart", name)
        log.info("SIGHUP: configuration reloaded")
        notifier.ready(self._status())
        return True

    def _install(self, generation: Generation) -> None:
        """Put the new generation in place for new sessions and new deliveries; sessions
        and deliveries already running keep theirs."""
        settings = generation.settings
        if settings.log != self.settings.log:
            try:
                logtargets.configure(settings.log, self.runtime.log_level, self.runtime.detached)
            except ConfigError as exc:
                log.error("SIGHUP: %s; logging as before", exc)
        self.generation = generation
        self._wire_resolver(generation.resolver)
        ctx = self._edge_context(generation)
        if self.edge is not None:
            self.edge.ctx = ctx
        if self.local is not None:
            self.local.use(ctx)
        self.scheduler.use(generation.delivery)
        if self.monitor is not None:
            self.monitor.settings = settings  # milter names and listeners on the page
            if settings.http != self.monitor.http_settings:
                log.warning("SIGHUP: http changed: takes effect at the next restart")

    async def _reload_helper(self) -> None:
        helper = self.runtime.helper
        assert helper is not None
        try:
            answer = await helper.request("reload", {}, timeout=60)
        except Exception as exc:
            log.error("SIGHUP: the privileged helper did not reload: %s", exc)
            return
        if not answer.ok:
            log.error("SIGHUP: the privileged helper did not reload: %s", answer.body.get("error"))

    def _on_term(self) -> None:
        now = time.monotonic()
        if self.runtime.worker is not None and now - self._first_term < SIGNAL_ECHO:
            # one stop, twice: a terminal's Ctrl-C or a kill of the process group reaches
            # the worker and its supervisor, which passes it on
            return
        self._terms += 1
        self._first_term = min(self._first_term, now) if self._terms > 1 else now
        if self._terms > 1:
            log.warning("second stop signal: exiting at once")
            os._exit(1)  # every 250 already followed a commit: nothing acknowledged is lost
        self.request_stop()

    def request_stop(self) -> None:
        self._stop.set()
        self._queue_runs.interrupt()


def run_daemon(settings: Settings, runtime: Runtime | None = None) -> ExitCode:
    """Run until stopped; the exit code (TEMPFAIL when the daemon stopped itself)."""
    daemon = Daemon(settings, runtime)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        asyncio.run(daemon.run())
    else:
        uvloop.run(daemon.run())
    return daemon.exit_code
