"""The nodes of a shared queue as ``mailwright cluster status`` and the status page show them.

A node is one daemon (its supervisor and workers, or its one process) on one host, named
by ``cluster.node``. ``NodeInfo`` is what a node's heartbeat row says plus the recipients
its processes are delivering; ``node_state`` tells ``up``, ``stale`` (no heartbeat for
more than ``STALE_BEATS`` of its intervals: killed, hung, or cut off from the database)
or ``stopped`` (it said so at a clean stop). Ages are measured on the database server's
clock, the one the heartbeats are written with. Pure data: no database, no settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

STALE_BEATS = 3  # heartbeats missed before a node is shown stale

NodeState = Literal["up", "stale", "stopped"]


def node_state(
    last_beat: float, heartbeat: float, stopped_at: float | None, now: float
) -> NodeState:
    """``stopped`` once the node said so; else ``stale`` when its last heartbeat is older
    than ``STALE_BEATS`` intervals at ``now``; else ``up``."""
    if stopped_at is not None:
        return "stopped"
    if now - last_beat > STALE_BEATS * heartbeat:
        return "stale"
    return "up"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node: str
    host: str
    pid: int
    version: str
    started_at: float
    last_beat: float
    heartbeat: float  # its interval, seconds
    workers: int
    listeners: str
    stopped_at: float | None
    delivering: int  # queued recipients leased to its processes
    now: float  # the database's clock when this was read

    @property
    def age(self) -> float:
        """Seconds since its last heartbeat."""
        return max(0.0, self.now - self.last_beat)

    @property
    def state(self) -> NodeState:
        return node_state(self.last_beat, self.heartbeat, self.stopped_at, self.now)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["now"]
        data.update(state=self.state, age=round(self.age, 3))
        return data
