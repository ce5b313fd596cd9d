"""Issue 15: a node killed in the middle of its deliveries; another node's heartbeat sees
it stale and gives its leases back, so its mail goes out in seconds, not at lease expiry.

A real PostgreSQL, two real daemons. Node A's next hop is a server that accepts
connections and never greets, so A's deliveries hang holding their leases (15 minutes
long); A is killed (SIGKILL to supervisor and workers). Node B, beating every second and
relaying to a real smtp-sink, finds A stale after three missed beats, gives back the
leases of A's processes and delivers every message, long before the leases would expire.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support import smtp_sink
from tests.support.cluster import cluster_status, listed, send
from tests.support.daemon import Mailwright, wait_until
from tests.support.peers import peer
from tests.support.sendmail import short_tmp

MESSAGES = 3
LEASE = 900  # seconds: the test is over long before


@contextmanager
def silent_server() -> Iterator[int]:
    """A port whose server accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def node(root: Path, name: str, database: str, next_hop: int) -> Mailwright:
    root.mkdir(parents=True, exist_ok=True)
    table = root / "transport"
    table.write_text(f"* smtp:[127.0.0.1]:{next_hop}\n")
    config: dict[str, Any] = {
        "server": {"workers": 1},
        "queue": {"backend": "postgresql", "postgresql": database},
        "cluster": {"node": name, "heartbeat": "1s"},
        "routing": {"transport_table": str(table)},
        "delivery": {"mode": "background", "lease": f"{LEASE}s"},
    }
    return Mailwright(root / "mw", config)


def delivering(mw: Mailwright, name: str) -> int:
    """What ``mailwright cluster status`` says node ``name`` is delivering."""
    nodes = {n["node"]: n for n in cluster_status(mw)["nodes"]}
    return int(nodes[name]["delivering"]) if name in nodes else 0


@peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
def test_the_leases_of_a_killed_node_go_back_when_its_heartbeat_stops(
    postgres_database: str,
) -> None:
    with short_tmp() as root, silent_server() as silent:
        sink = smtp_sink.SmtpSink(root / "sink").start()
        a = node(root / "a", "node-a", postgres_database, silent)
        a.own_group = True
        b = node(root / "b", "node-b", postgres_database, sink.port)
        try:
            # B first: on one host, a node starting up would void a dead local process's
            # leases itself; a node on another host cannot know it died. B's queue is empty,
            # so it sleeps until woken (it is not woken by A's mail)
            b.start()
            a.start()
            ids = {send(a.port, n) for n in range(MESSAGES)}
            wait_until(lambda: delivering(a, "node-a") == MESSAGES, 30, "node A to lease all")
            a.kill_group()  # its deliveries hang, leased for LEASE seconds
            wait_until(lambda: len(sink.messages()) >= MESSAGES, 30, "node B to deliver A's mail")
            wait_until(lambda: not listed(b), 30, "the queue to empty")
            assert any("node node-a has not beaten" in line for line in b.log), b.log[-20:]
        finally:
            a.stop()
            b.stop()
            sink.stop()
        assert len(ids) == MESSAGES
