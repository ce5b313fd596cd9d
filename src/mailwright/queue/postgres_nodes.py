"""The cluster's nodes in a shared PostgreSQL queue: heartbeats written, nodes read.

``NodeRegistry`` writes the tables of schema version 2 (``queue.postgres_schema``):
``nodes``, one row per node, written by the process that runs what exists once per
daemon (worker 0, or the only process): registered at start, its ``last_beat`` renewed
every ``cluster.heartbeat`` seconds, marked stopped at a clean stop; and
``node_processes``, one row per process of the node (every worker), the
``host:pid:start`` part of its lease owners (``queue.lease.process_id``), so that leased
recipients can be counted per node. ``stale`` names the other nodes whose heartbeat
stopped without a clean stop, with their processes, so that their leases can be given
back at once rather than expire (``daemon.heartbeat``). The rows of this host's
processes that died (a worker restarted by its supervisor) are removed at each heartbeat
of a node on this host; another host's dead rows stay until that node starts again and
reuses nothing (their leases expire anyway). Times are the database server's
(``now()``).

``read_nodes`` lists every node with the recipients its processes are delivering
(``queue.nodes.NodeInfo``). Every statement is one short autocommit transaction on the
store's pool; errors are ``StoreError``.

Trusts: its own database. Settings read: none (the caller passes the node's name,
interval, workers and listeners).
"""

from __future__ import annotations

import os
import socket

from mailwright import __version__
from mailwright.queue.lease import owner_is_dead, process_id
from mailwright.queue.nodes import NodeInfo
from mailwright.queue.postgres import PostgresQueueStore
from mailwright.queue.records import QUEUED

__all__ = ["NodeRegistry", "read_nodes"]

_NOW = "extract(epoch from now())"


class NodeRegistry:
    """This node's rows; each method is blocking (call it from a thread)."""

    def __init__(self, store: PostgresQueueStore, node: str, heartbeat: float) -> None:
        self.store = store
        self.node = node
        self.heartbeat = heartbeat

    def join(self) -> None:
        """This process is one of the node's (every worker calls it at start)."""
        with self.store.connection() as conn:
            conn.execute(
                "INSERT INTO node_processes (process, node) VALUES (%s, %s)"
                " ON CONFLICT (process) DO UPDATE SET node = excluded.node",
                (process_id(), self.node),
            )

    def leave(self) -> None:
        """This process stops cleanly."""
        with self.store.connection() as conn:
            conn.execute("DELETE FROM node_processes WHERE process = %s", (process_id(),))

    def register(self, workers: int, listeners: str) -> None:
        """The node starts (again): a fresh row under its name."""
        pid = os.getppid() if workers > 1 else os.getpid()  # the supervisor's, with workers
        with self.store.connection() as conn:
            conn.execute(
                f"""INSERT INTO nodes (node, host, pid, version, started_at, last_beat,
                    heartbeat, workers, listeners, stopped_at)
                VALUES (%(node)s, %(host)s, %(pid)s, %(version)s, {_NOW}, {_NOW},
                    %(heartbeat)s, %(workers)s, %(listeners)s, NULL)
                ON CONFLICT (node) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                    version = excluded.version, started_at = excluded.started_at,
                    last_beat = excluded.last_beat, heartbeat = excluded.heartbeat,
                    workers = excluded.workers, listeners = excluded.listeners,
                    stopped_at = NULL""",
                {
                    "node": self.node,
                    "host": socket.gethostname(),
                    "pid": pid,
                    "version": __version__,
                    "heartbeat": self.heartbeat,
                    "workers": workers,
                    "listeners": listeners,
                },
            )

    def beat(self, listeners: str) -> None:
        """The node is alive; and the rows of its dead processes on this host go."""
        with self.store.connection() as conn:
            conn.execute(
                f"UPDATE nodes SET last_beat = {_NOW}, listeners = %s, stopped_at = NULL"
                " WHERE node = %s",
                (listeners, self.node),
            )
            rows = conn.execute(
                "SELECT process FROM node_processes WHERE node = %s", (self.node,)
            ).fetchall()
            dead = [r["process"] for r in rows if owner_is_dead(f"{r['process']}:0")]
            if dead:
                conn.execute("DELETE FROM node_processes WHERE process = ANY(%s)", (dead,))

    def stop(self) -> None:
        """The node stops cleanly: shown stopped, not stale."""
        with self.store.connection() as conn:
            conn.execute(
                f"UPDATE nodes SET stopped_at = {_NOW}, last_beat = {_NOW} WHERE node = %s",
                (self.node,),
            )

    def stale(self) -> dict[str, tuple[float, tuple[str, ...]]]:
        """The other nodes that stopped beating without stopping (no heartbeat for more
        than three of their intervals): their name, the heartbeat's age in seconds and
        their processes, whose leases the caller gives back (``ReleaseProcessLeases``)."""
        with self.store.connection() as conn:
            rows = conn.execute(
                f"""SELECT n.node, {_NOW} - n.last_beat AS age,
                    array_agg(p.process ORDER BY p.process) AS processes
                FROM nodes n JOIN node_processes p ON p.node = n.node
                WHERE n.node <> %s AND n.stopped_at IS NULL
                    AND n.last_beat < {_NOW} - 3 * n.heartbeat
                GROUP BY n.node, n.last_beat""",
                (self.node,),
            ).fetchall()
        return {r["node"]: (float(r["age"]), tuple(r["processes"])) for r in rows}


def read_nodes(store: PostgresQueueStore) -> list[NodeInfo]:
    """Every node that ever registered, by name, with what it is delivering now."""
    with store.connection() as conn:
        now_row = conn.execute(f"SELECT {_NOW} AS now").fetchone()
        rows = conn.execute(
            """SELECT n.*, coalesce(d.delivering, 0) AS delivering FROM nodes n
            LEFT JOIN (
                SELECT p.node, count(*) AS delivering FROM recipients r
                JOIN node_processes p
                    ON p.process = substring(r.lease_owner from '^(.*):[^:]*$')
                WHERE r.lease_owner IS NOT NULL AND r.state = %s
                GROUP BY p.node
            ) d ON d.node = n.node
            ORDER BY n.node""",
            (QUEUED,),
        ).fetchall()
    now = float(now_row["now"]) if now_row else 0.0
    return [
        NodeInfo(
            node=r["node"],
            host=r["host"],
            pid=int(r["pid"]),
            version=r["version"],
            started_at=float(r["started_at"]),
            last_beat=float(r["last_beat"]),
            heartbeat=float(r["heartbeat"]),
            workers=int(r["workers"]),
            listeners=r["listeners"],
            stopped_at=None if r["stopped_at"] is None else float(r["stopped_at"]),
            delivering=int(r["delivering"]),
            now=now,
        )
        for r in rows
    ]
