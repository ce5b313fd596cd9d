"""The daemon's status at one moment: what ``mailwright status`` and the status page show.

Plain data, built by the daemon (``daemon.monitor``) and turned into JSON for the
control socket (``as_json``) and back (``from_json``) for the command line.
Values from mail and peers (addresses, replies, error texts) are carried as they
are; displays escape them. Reads no settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mailwright.observability.metrics import Totals
from mailwright.observability.recent import Bounce, LogEntry
from mailwright.queue.nodes import NodeInfo
from mailwright.queue.store import DeferredGroup, QueueCounts


@dataclass(slots=True)
class ListenerStatus:
    name: str
    kind: str
    address: str  # "127.0.0.1:25", "[::1]:587" or a socket path
    sessions: int


@dataclass(slots=True)
class MilterStatus:
    name: str
    calls: int
    failures: int
    last_error: str | None = None
    last_error_stage: str | None = None
    last_error_at: float | None = None


@dataclass(slots=True)
class Status:
    hostname: str
    version: str
    pid: int
    started_at: float
    now: float
    delivery_mode: str
    queue_directory: str
    listeners: list[ListenerStatus]
    queue: QueueCounts
    totals: Totals
    http: str | None = None  # the status page's URL
    milters: list[MilterStatus] = field(default_factory=list)
    errors: list[LogEntry] = field(default_factory=list)
    bounces: list[Bounce] = field(default_factory=list)
    deferred: list[DeferredGroup] = field(default_factory=list)
    workers: int = 1  # worker processes; pid is then the supervisor's
    nodes: list[NodeInfo] = field(default_factory=list)  # of a shared queue (PostgreSQL)

    @property
    def uptime(self) -> float:
        return max(0.0, self.now - self.started_at)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        """The inverse of ``as_json`` (unknown keys, from a newer daemon, are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["listeners"] = [ListenerStatus(**x) for x in data.get("listeners", [])]
        values["queue"] = QueueCounts(**data.get("queue", {}))
        values["totals"] = Totals(**data.get("totals", {}))
        values["milters"] = [MilterStatus(**x) for x in data.get("milters", [])]
        values["errors"] = [LogEntry(**x) for x in data.get("errors", [])]
        values["bounces"] = [Bounce(**x) for x in data.get("bounces", [])]
        values["deferred"] = [DeferredGroup(**x) for x in data.get("deferred", [])]
        values["nodes"] = [NodeInfo(**x) for x in data.get("nodes", [])]
        return cls(**values)
