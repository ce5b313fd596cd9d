"""``mailwright cluster status``: the nodes of a shared queue and the queue they share.

Reads the database straight (``queue.backend = "postgresql"``): no control socket, so it
works from any host with the configuration, whether a daemon runs there or not. Lists
every node that ever registered (``queue.postgres_nodes``): its state (``up``, ``stale``:
no heartbeat for three of its intervals, ``stopped``: it said so at a clean stop), the
age of its last heartbeat, its host, pid, workers and listeners, the recipients it is
delivering; then the queue's totals, as ``mailwright status`` counts them. With SQLite
there is no cluster: it says so and shows the queue. A table on a terminal, tab-separated
lines when piped, JSON with ``--json``. Exit 0, or 69 (EX_UNAVAILABLE) when the queue cannot
be read.

Settings read: ``queue.backend``, ``queue.postgresql``, ``queue.postgresql_password_file``,
``queue.directory``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import click

from mailwright.cli.output import print_json, table
from mailwright.cli.settings import load_or_exit
from mailwright.cli.status import queue_line
from mailwright.config.schema import Settings
from mailwright.core.durations import short as short_duration
from mailwright.core.sysexits import ExitCode
from mailwright.queue.backend import describe, queue_store
from mailwright.queue.nodes import NodeInfo
from mailwright.queue.store import QueueCounts, StoreError


@click.group()
def cluster() -> None:
    """The nodes sharing a PostgreSQL queue (docs/cluster.md)."""


def read_cluster(settings: Settings) -> tuple[list[NodeInfo], QueueCounts]:
    """The nodes (none with SQLite) and the queue's totals; ``StoreError`` when unreadable."""
    store = queue_store(settings.queue)
    try:
        store.open_for_reading()
        nodes: list[NodeInfo] = []
        if settings.queue.backend == "postgresql":
            from mailwright.queue.postgres import PostgresQueueStore
            from mailwright.queue.postgres_nodes import read_nodes

            assert isinstance(store, PostgresQueueStore)
            nodes = read_nodes(store)
        return nodes, store.queue_counts(time.time())
    finally:
        store.close()


def node_row(n: NodeInfo) -> list[str]:
    return [
        n.node,
        n.state,
        f"{short_duration(n.age)} ago",
        n.host,
        str(n.pid),
        str(n.workers),
        str(n.delivering),
        n.listeners or "-",
        n.version,
    ]


COLUMNS = (
    "node",
    "state",
    "heartbeat",
    "host",
    "pid",
    "workers",
    "delivering",
    "listeners",
    "version",
)


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def cluster_status(ctx: click.Context, as_json: bool) -> None:
    """List the nodes of the shared queue, their last heartbeat and deliveries, and the queue.

    \b
    Examples:
      mailwright cluster status
      mailwright cluster status --json
    """
    settings = load_or_exit(ctx)
    try:
        nodes, counts = read_cluster(settings)
    except StoreError as exc:
        click.echo(f"mailwright: {exc}", err=True)
        ctx.exit(ExitCode.UNAVAILABLE)
    queue = describe(settings.queue)
    if as_json:
        data: dict[str, Any] = {
            "backend": settings.queue.backend,
            "queue_store": queue,
            "nodes": [n.as_json() for n in nodes],
            "queue": dataclasses.asdict(counts),
        }
        print_json(data)
        return
    if settings.queue.backend != "postgresql":
        click.echo(f"queue {queue} (sqlite): no cluster, this host is the only node")
    elif not nodes:
        click.echo(f"queue {queue}: no node has registered")
    else:
        table(f"Nodes of {queue}", COLUMNS, (node_row(n) for n in nodes))
    click.echo(f"queue: {queue_line(counts, time.time())}")
