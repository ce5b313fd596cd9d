"""Issue 15: three nodes on loopback addresses, one PostgreSQL queue; nodes and the database fail.

Real daemons (nodes A, B and C on 127.0.0.2, 127.0.0.3 and 127.0.0.4: each its own
configuration, queue directory, ``[cluster] node`` name and host name), a real PostgreSQL
(tests/support/postgres.py), a real next hop (Postfix's smtp-sink, which records the EHLO
name of the node that delivered) and real clients (smtplib, ``mailwright queue``,
``mailq``). Short leases, retries and heartbeats keep each test to seconds.

- Mail accepted by node A while the next hop is down is listed, held and deleted with
  node C's configuration (and ``mailq``); once A is stopped and the next hop is up, B and
  C deliver it, the held message only once C releases it.
- Clients send to all three nodes without pause while one node after the other is killed
  with SIGKILL (supervisor and workers at once) and restarted, ten times: every message
  that got a 250 reaches the next hop; duplicates (at-least-once) are counted and printed.
- The database is stopped and started again while clients send: while it is down every
  message gets 451 4.3.0, none 250, and every node's delivery loop meets the outage (a
  message to a next hop that is down is retried every 2 s); once it is back each node
  accepts, beats and delivers again by itself (no daemon is restarted), and nothing
  acknowledged is lost.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import smtp_sink
from tests.support.cluster import (
    Answer,
    Clients,
    Node,
    cluster_status,
    listed,
    listed_ids,
    number,
    send,
)
from tests.support.daemon import free_port, wait_until
from tests.support.peers import peer
from tests.support.postgres import PrivatePostgres, sql_rows
from tests.support.sendmail import Tools, short_tmp

ADDRESSES = {"node-a": "127.0.0.2", "node-b": "127.0.0.3", "node-c": "127.0.0.4"}
BEAT = 0.5
FAST: dict[str, Any] = {
    "server": {"workers": 1},
    "cluster": {"heartbeat": BEAT},
    "delivery": {"lease": 3},  # a dead node's recipients are due again after 3 s
    "queue": {"first_retry": 1, "max_retry_interval": 2, "host_status_timeout": 0},
}
NAMES = {f"{name}.test" for name in ADDRESSES}  # the nodes' EHLO names, as the sink saw them
DEAD = "someone@dead.test"  # routed to a port where nothing listens
FAILED_CLAIM = "cannot read the queue"  # the delivery loop's warning (manager.scheduler)
CYCLES = 10

needs_sink = peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")


@contextmanager
def three_nodes(
    root: Path, database: str, sink: smtp_sink.SmtpSink, workers: dict[str, int] | None = None
) -> Iterator[list[Node]]:
    """Nodes A, B and C (configured, not started); each is stopped at the end."""
    transport = f"dead.test smtp:[127.0.0.1]:{free_port()}\n* smtp:[127.0.0.1]:{sink.port}\n"
    nodes = []
    for name, address in ADDRESSES.items():
        extra = {**FAST, "server": {"workers": (workers or {}).get(name, 1)}}
        node = Node(root / name, name, address, database, transport, extra)
        node.own_group = True  # kill_group(): supervisor and workers at once
        nodes.append(node)
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def delivered_by(sink: smtp_sink.SmtpSink, numbers: set[int] | None = None) -> Counter[str]:
    """How many messages (of ``numbers``) the sink received from each node (by its EHLO)."""
    return Counter(
        m.helo.split()[0] if m.helo else "?"
        for m in sink.messages()
        if numbers is None or number(m.content) in numbers
    )


def deliveries(sink: smtp_sink.SmtpSink) -> Counter[int]:
    return Counter(number(m.content) for m in sink.messages())


def duplicates(delivered: Counter[int]) -> int:
    return sum(count - 1 for count in delivered.values())


@needs_sink
def test_node_c_administers_and_b_or_c_deliver_the_mail_of_node_a(postgres_database: str) -> None:
    with short_tmp() as root:
        sink = smtp_sink.SmtpSink(root / "sink")  # its port is chosen; it is not started
        try:
            with three_nodes(root, postgres_database, sink) as (a, b, c):
                for node in (a, b, c):
                    node.start()
                ids = [send(a.port, n, a.address) for n in range(6)]
                assert listed_ids(c) == set(ids)  # C sees what A accepted
                mailq = Tools(c, root / "bin").run(program="mailq")
                assert mailq.returncode == 0, mailq.stderr.decode()
                assert all(i in mailq.stdout.decode() for i in ids), mailq.stdout
                held, deleted = ids[0], ids[1]
                done = c.cli("queue", "hold", held, "--reason", "check")
                assert done.returncode == 0 and b"held: 1 message(s)" in done.stdout, done
                done = c.cli("queue", "delete", deleted)
                assert done.returncode == 0 and b"deleted: 1 message(s)" in done.stdout, done
                states = {m["queue_id"]: m["state"] for m in listed(a)}  # seen from A
                assert set(states) == set(ids) - {deleted} and states[held] == "hold", states
                # every node tries (the shared queue) and defers: the next hop is down
                wait_until(
                    lambda: all(
                        r["attempts"] >= 1
                        for m in listed(c)
                        if m["state"] != "hold"
                        for r in m["recipients"]
                    ),
                    60,
                    "every active message deferred",
                )
                assert a.stop() == 0
                sink.start()  # B and C retry by themselves; the held message waits
                wait_until(lambda: listed_ids(c) == {held}, 60, "B and C to deliver")
                done = c.cli("queue", "release", held)
                assert done.returncode == 0, done.stderr.decode()
                wait_until(lambda: not listed_ids(b), 60, "the released message delivered")
                wait_until(lambda: len(sink.messages()) >= 5, 30, "the sink to have all")
            delivered = deliveries(sink)
            by_node = delivered_by(sink)
            print(
                f"node A's mail: 6 accepted, 1 deleted, {len(delivered)} delivered"
                f" {dict(by_node)}, {duplicates(delivered)} duplicate(s)"
            )
            assert set(delivered) == set(range(6)) - {1}, "lost, or the deleted one sent"
            assert set(by_node) <= NAMES - {"node-a.test"}, by_node
        finally:
            sink.stop()


@needs_sink
def test_ten_kill_9_cycles_under_load_lose_no_acknowledged_message(
    postgres_database: str,
) -> None:
    with short_tmp() as root:
        sink = smtp_sink.SmtpSink(root / "sink").start()
        numbers = itertools.count()
        clients: list[Clients] = []
        try:
            with three_nodes(root, postgres_database, sink, {"node-a": 2}) as nodes:
                for node in nodes:
                    node.start()
                clients = [Clients(n.address, n.port, numbers, senders=1) for n in nodes]
                for client in clients:
                    client.start()
                started = [0.0] * len(nodes)
                for cycle in range(CYCLES):
                    k = cycle % len(nodes)  # A, B, C, A, ...
                    clients[k].wait_acked(3, start=started[k])  # it has work on hand
                    nodes[k].kill_group()  # while every client sends
                    print(f"cycle {cycle}: {nodes[k].name} killed")
                    nodes[k].start()
                    started[k] = time.monotonic()
                for client in clients:
                    client.wait_acked(2, start=started[-1])  # all three serve at the end
                for client in clients:
                    client.stop()
                acked = {n for client in clients for n in client.acked}
                wait_until(lambda: not listed(nodes[2]), 120, "the nodes to empty the queue")
                wait_until(lambda: acked <= set(deliveries(sink)), 30, "every acknowledged message")
        finally:
            for client in clients:
                client.stop()
            delivered = deliveries(sink)
            sink.stop()
        lost = acked - set(delivered)
        failed = sum(r.code != 250 for client in clients for r in client.answers)
        print(
            f"kill -9 x{CYCLES}: {len(acked)} acknowledged, {failed} not, {len(delivered)}"
            f" delivered, {duplicates(delivered)} duplicate(s), {len(lost)} lost"
        )
        assert not lost, sorted(lost)
        assert duplicates(delivered) <= len(acked), "at least once, not every time"


def server_clock(database: str) -> float:
    """The database server's time now (what the nodes' heartbeats are stamped with)."""
    ((now,),) = sql_rows(database, "SELECT extract(epoch FROM now())::float8")
    assert isinstance(now, float)
    return now


def count_451(replies: list[Answer]) -> int:
    return sum(r.code == 451 and r.text.startswith(b"4.3.0") for r in replies)


@needs_sink
def test_the_database_restarted_under_load_costs_451s_and_nothing_else() -> None:
    pg_root = Path(tempfile.mkdtemp(prefix="mailwright-pg-"))  # pytest's tmp is closed to others
    server = PrivatePostgres(pg_root).start()
    try:
        with short_tmp() as root:
            sink = smtp_sink.SmtpSink(root / "sink").start()
            try:
                with three_nodes(root, server.new_database(), sink) as nodes:
                    seen = restart_under_load(server, nodes, sink)
            finally:
                delivered = deliveries(sink)
                sink.stop()
    finally:
        server.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
    lost = seen.acked - set(delivered)
    codes = Counter(r.code for r in seen.while_down)
    print(
        f"database restart: {len(seen.acked)} acknowledged, {count_451(seen.while_down)} x"
        f" 451 4.3.0 while down (replies then: {dict(codes)}), {len(delivered)} delivered,"
        f" {duplicates(delivered)} duplicate(s), {len(lost)} lost"
    )
    assert not [r for r in seen.while_down if r.code == 250], "a 250 without the database"
    assert count_451(seen.while_down) == len(seen.while_down), codes
    assert not lost, sorted(lost)


@dataclass
class Seen:
    acked: set[int]  # the numbers of every message that got a 250
    while_down: list[Answer]  # the replies to data sent and answered while the database was down


def restart_under_load(
    server: PrivatePostgres, nodes: list[Node], sink: smtp_sink.SmtpSink
) -> Seen:
    """Stop and start the database while clients send to every node; wait until every
    node accepts, beats and delivers again, and the queue is empty."""
    numbers = itertools.count()
    for node in nodes:
        node.start()
    # retried every 2 s by all three: every node's delivery loop meets the outage
    dead = {send(n.port, next(numbers), n.address, DEAD) for n in nodes}
    clients = [Clients(n.address, n.port, numbers, senders=1).start() for n in nodes]
    try:
        for client in clients:
            client.wait_acked(2)
        failed = [sum(FAILED_CLAIM in line for line in n.log) for n in nodes]
        server.stop()
        down = time.monotonic()
        for client in clients:  # every node answers while the database is away ...
            wait_until(lambda c=client: count_451(c.since(down)) >= 2, 60, "451 replies")
        for node, before in zip(nodes, failed, strict=True):  # ... and tries to deliver
            node.wait_log(FAILED_CLAIM, timeout=30, occurrence=before + 1)
        up = time.monotonic()
        server.start()
        restarted = server_clock(server.url())
        for client in clients:  # no daemon restarted: they accept again ...
            client.wait_acked(3, start=up)
        wait_until(  # ... beat again ...
            lambda: all(n["last_beat"] > restarted for n in cluster_status(nodes[2])["nodes"]),
            30,
            "a heartbeat of every node after the restart",
        )
        wait_until(  # ... and deliver again, each of them
            lambda: set(delivered_by(sink, acked_since(clients, up))) == NAMES,
            60,
            "every node to deliver after the restart",
        )
    finally:
        for client in clients:
            client.stop()
    acked = acked_since(clients, 0.0)
    wait_until(lambda: listed_ids(nodes[2]) <= dead, 60, "the nodes to empty the queue")
    wait_until(lambda: acked <= set(deliveries(sink)), 30, "every acknowledged message")
    while_down = [r for c in clients for r in c.since(down) if r.answered < up]
    return Seen(acked, while_down)


def acked_since(clients: list[Clients], start: float) -> set[int]:
    return {r.number for c in clients for r in c.since(start) if r.code == 250}
