"""What the daemon shows about itself: metrics, the last hour, the web endpoint, ``status``.

Started after the listeners and stopped before them. It samples the queue size
and the counters every ``SAMPLE_INTERVAL`` seconds into the per-minute history,
keeps the daemon's warnings and errors (``observability.recent``), answers the
control socket's ``status`` request, and serves ``/metrics`` and the status page
when ``http.port`` is set. Queue figures come from aggregate queries run in a
thread (never on the event loop); sessions are counted from the listeners'
tables at scrape time. With several workers (``metrics.MULTIPROCESS``; this monitor
runs in one of them) the figures of ``observability.metrics`` are every worker's:
traffic totals, milter counts, authentication results and sessions come from the
workers' metric files, the uptime and pid are the supervisor's; recent bounces, milter
failures and warnings are every worker's (``observability.recent.SharedRecent``).
The status page's buttons go through the daemon's ``Admin`` (``daemon.admin``), as
``mailwright queue`` does over the control socket: the same store operations through
the daemon's writer, a mail log line per message.
With ``queue.backend = "postgresql"`` the status also lists the cluster's nodes
(``queue.postgres_nodes``), read from the database at each request.
Settings: ``http.*``, ``hostname``, ``delivery.mode``, ``filters`` (milter names),
``queue.directory``, ``queue.backend``; whether each authentication check is on:
``spf.enabled``, ``dmarc.enabled``, ``arc.verify``, ``delivery.dane``,
``tls_reporting.enabled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mailwright import __version__
from mailwright.config.schema import MilterFilter, PluginFilter, Settings
from mailwright.core.headers import HeaderList
from mailwright.daemon.admin import Admin
from mailwright.daemon.control import Handler
from mailwright.edge.listener import Edge
from mailwright.edge.local import LocalSubmission
from mailwright.observability import metrics
from mailwright.observability.recent import RECENT, ErrorLog
from mailwright.queue.admin import Actor, Selection
from mailwright.queue.nodes import NodeInfo
from mailwright.queue.store import (
    QueueCounts,
    QueueStore,
    StoredMessage,
    StoreError,
    UnknownMessageError,
)
from mailwright.queue.writer import QueueWriter
from mailwright.web.history import History, Sample
from mailwright.web.status import AuthStatus, ListenerStatus, MilterStatus, Status
from mailwright.web.webapp import ActionResult, StatusSite, WebSettings
from mailwright.web.webserver import WebServer

log = logging.getLogger("mailwright.daemon")

SAMPLE_INTERVAL = 10.0
WEB_ACTOR = Actor("token holder", "status page")  # the page knows no user names


class Monitor:
    def __init__(
        self,
        settings: Settings,
        store: QueueStore,
        writer: QueueWriter,
        control: Mapping[str, Handler],
        edge: Edge | None = None,
        local: LocalSubmission | None = None,
        admin: Admin | None = None,
    ) -> None:
        self.settings = settings
        self.http_settings = settings.http  # what the web server was started with
        self.store = store
        self.writer = writer
        self.control = control  # the control socket's handlers: "flush", "wake"
        self.edge = edge
        self.local = local
        self.admin = admin  # the status page's buttons
        workers = metrics.MULTIPROCESS
        self.started_at = workers.started_at if workers is not None else time.time()
        self.timeline = History(metrics.totals())
        self.web: WebServer | None = None
        self._errors = ErrorLog()
        self._sampler: asyncio.Task[None] | None = None

    # ---- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        logging.getLogger("mailwright").addHandler(self._errors)
        metrics.START_TIME.set(self.started_at)
        await self.sample()
        self._sampler = asyncio.create_task(self._sample_loop(), name="status-sampler")
        http = self.settings.http
        if http.port is not None:
            site = StatusSite(WebSettings(http.token, http.metrics_require_token), self)
            self.web = WebServer(http.address, http.port, site)
            await self.web.start()
            if not http.token:
                log.warning("http: no http.token set: the status page is off, /metrics is on")

    async def stop(self) -> None:
        if self.web is not None:
            await self.web.stop()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        logging.getLogger("mailwright").removeHandler(self._errors)

    @property
    def url(self) -> str | None:
        if self.web is None:
            return None
        host = self.web.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.web.port}/"

    # ---- figures ------------------------------------------------------------------------
    async def queue_counts(self) -> QueueCounts:
        return await asyncio.to_thread(self.store.queue_counts, time.time())

    async def sample(self) -> QueueCounts:
        counts = await self.queue_counts()
        self.timeline.update(time.time(), metrics.totals(), counts.messages, counts.deferred)
        return counts

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)  # a periodic timer, not a synchronisation
            await self.sample_quietly()

    async def sample_quietly(self) -> None:
        """``sample``, its failure logged: a database that is away is one line (the
        status page says the rest), anything else a traceback, being a bug."""
        try:
            await self.sample()
        except StoreError as exc:
            log.warning("status: cannot sample the queue: %s", exc)
        except Exception:
            log.exception("status: sampling the queue failed")

    def own_sessions(self) -> dict[str, int]:
        """Sessions open in this process, per listener (those without one read 0)."""
        counts: dict[str, int] = {}
        if self.edge is not None:
            for listener in self.settings.listeners:
                counts[listener.display_name] = 0
            for session in self.edge.sessions.values():
                name = session.listener.display_name
                counts[name] = counts.get(name, 0) + 1
        if self.local is not None:
            counts[self.local.listener.display_name] = len(self.local.sessions)
        return counts

    def sessions(self) -> list[ListenerStatus]:
        """Every listener with its open sessions (in every worker, with workers)."""
        out = []
        multi = metrics.MULTIPROCESS is not None
        counts = metrics.sessions_active() if multi else self.own_sessions()
        if self.edge is not None:
            for listener in self.settings.listeners:
                name = listener.display_name
                where = (
                    listener.address[5:]
                    if listener.address.startswith("unix:")
                    else _host_port(listener.address, listener.port)
                )
                out.append(ListenerStatus(name, listener.kind.value, where, counts.get(name, 0)))
        if self.local is not None:
            out.append(
                ListenerStatus(
                    self.local.listener.display_name,
                    "local",
                    str(self.local.path),
                    counts.get(self.local.listener.display_name, 0),
                )
            )
        return out

    def listening(self, workers: int) -> int:
        """How many workers accept connections now: worker 0 alone while the daemon has
        one connection open or none (``edge.standby``), else all of them."""
        standby = self.edge.standby if self.edge is not None else None
        return 1 if standby is not None and not standby.spread else workers

    def milters(self) -> list[MilterStatus]:
        counts = metrics.milter_counts()
        out = []
        for entry in self.settings.filters:
            if not isinstance(entry, MilterFilter):
                continue
            name = entry.display_name
            calls, failures = counts.get(name, (0, 0))
            failure = RECENT.milter_failures.get(name)
            out.append(
                MilterStatus(
                    name,
                    calls,
                    failures,
                    failure.error if failure else None,
                    failure.stage if failure else None,
                    failure.at if failure else None,
                )
            )
        return out

    def auth(self) -> list[AuthStatus]:
        """Each authentication check with its results since start (every worker's)."""
        on = _auth_enabled(self.settings)
        return [
            AuthStatus(check, on.get(check, False), results)
            for check, results in metrics.auth_counts().items()
        ]

    # ---- the Backend of the status page, and the control socket --------------------------
    async def status(self, detail: bool = False) -> Status:
        counts = await self.sample()
        deferred = await asyncio.to_thread(self.store.deferred_groups) if detail else []
        workers = metrics.MULTIPROCESS
        count = workers.count if workers is not None else 1
        return Status(
            hostname=self.settings.hostname,
            version=__version__,
            pid=workers.pid if workers is not None else os.getpid(),
            started_at=self.started_at,
            now=time.time(),
            delivery_mode=self.settings.delivery.mode.value,
            queue_directory=str(self.settings.queue.directory),
            listeners=self.sessions(),
            queue=counts,
            totals=metrics.totals(),
            http=self.url,
            milters=self.milters(),
            errors=RECENT.errors(50 if detail else 10),
            bounces=RECENT.bounces(50 if detail else 10),
            deferred=deferred,
            workers=count,
            listening=self.listening(count),
            nodes=await self.nodes(),
            auth=self.auth(),
        )

    async def nodes(self) -> list[NodeInfo]:
        """The nodes of a shared queue (``queue.postgres_nodes``); none with SQLite, or
        when the database does not answer (the page still shows the rest)."""
        if self.settings.queue.backend != "postgresql":
            return []
        from mailwright.queue.postgres import PostgresQueueStore  # psycopg when used
        from mailwright.queue.postgres_nodes import read_nodes

        if not isinstance(self.store, PostgresQueueStore):
            return []
        try:
            return await asyncio.to_thread(read_nodes, self.store)
        except StoreError as exc:
            log.warning("status: cannot read the cluster's nodes: %s", exc)
            return []

    async def control_status(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control socket's ``status`` request (``mailwright status``)."""
        status = await self.status(detail=bool(request.get("detail")))
        return {"ok": True, "status": status.as_json()}

    def history(self) -> list[Sample | None]:
        return self.timeline.window(time.time())

    async def oldest_messages(self, limit: int) -> list[StoredMessage]:
        return await asyncio.to_thread(self.store.oldest_messages, limit)

    async def message(self, queue_id: str) -> tuple[StoredMessage, HeaderList] | None:
        def read() -> tuple[StoredMessage, HeaderList] | None:
            message = self.store.get_message(queue_id)
            if message is None:
                return None
            try:
                return message, self.store.read_headers(queue_id)
            except UnknownMessageError:  # deleted in between
                return None

        return await asyncio.to_thread(read)

    async def act(self, action: str, ids: Sequence[str], reason: str) -> ActionResult:
        """``mailwright queue flush|hold|release|delete`` for ``ids`` (none: the whole queue
        for ``flush-all``), done by the daemon's ``Admin`` (``daemon.admin``): the same
        store operations through this daemon's writer, one mail log line per message.

        Not the CLI functions themselves: they open a second store on the queue file,
        and a second store in this process would drop SQLite's POSIX locks (a close()
        of any descriptor of the file releases them all) and could corrupt the queue.
        """
        if self.admin is None:
            return ActionResult(action, 0, failed=True)
        name = "flush" if action == "flush-all" else action
        try:
            result = await self.admin.act(name, Selection(tuple(ids)), WEB_ACTOR, reason)
        except Exception as exc:
            log.error("status page: %s %s failed: %s", action, " ".join(ids), exc)
            return ActionResult(action, 0, failed=True)
        done = result.scheduled if name == "flush" else len(result.done)
        log.info("status page: %s %s: %d done", action, " ".join(ids) or "(all)", done)
        return ActionResult(action, done, result.missing)

    async def metrics(self) -> bytes:
        counts = await self.queue_counts()
        oldest = max(0.0, time.time() - counts.oldest) if counts.oldest else 0.0
        metrics.set_queue(
            metrics.QueueSizes(
                counts.active_messages,
                counts.held_messages,
                counts.due,
                counts.deferred,
                counts.delivering,
                counts.held,
                oldest,
                refusing=counts.refusing_since is not None,
            )
        )
        metrics.set_sessions(self.own_sessions())  # with workers: this one's share
        if metrics.MULTIPROCESS is not None:  # reads every worker's files: off the loop
            return await asyncio.to_thread(metrics.exposition)
        return metrics.exposition()


def _auth_enabled(settings: Settings) -> dict[str, bool]:
    return {
        "spf": settings.spf.enabled,
        "dkim": any(
            isinstance(f, PluginFilter) and f.plugin == "dkim_verify" for f in settings.filters
        ),
        "dmarc": settings.dmarc.enabled,
        "arc": settings.arc.verify,
        "dane": settings.delivery.dane_used,
        "tlsrpt": settings.tls_reporting.enabled,
    }


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
