"""Issue 15: nodes of a shared queue register with a heartbeat; ``mailwright cluster status``.

A real PostgreSQL (tests/support/postgres.py) and two real daemons on it, two nodes by
``[cluster] node`` (their own ports and queue directories; heartbeat every 0.5 s): a
third configuration, with no daemon of its own, lists both as up with recent heartbeats
and the shared queue; a node stopped cleanly is shown stopped; a node killed with SIGKILL
(one process, so nothing of it can say goodbye) is shown stale once its heartbeat is
older than three intervals. ``mailwright status`` of a node (its status page's data) lists
the nodes too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.cluster import cluster_status, on_postgres, send
from tests.support.daemon import Mailwright, wait_until

BEAT = 0.5


def node_config(url: str, name: str, workers: int) -> dict[str, Any]:
    config = on_postgres(url)
    config["server"] = {"workers": workers}
    config["cluster"] = {"node": name, "heartbeat": BEAT}
    return config


def states(mw: Mailwright) -> dict[str, str]:
    return {n["node"]: n["state"] for n in cluster_status(mw)["nodes"]}


def test_two_nodes_heartbeat_stop_and_go_stale(tmp_path: Path, postgres_database: str) -> None:
    a = Mailwright(tmp_path / "a", node_config(postgres_database, "node-a", workers=2))
    b = Mailwright(tmp_path / "b", node_config(postgres_database, "node-b", workers=1))
    observer = Mailwright(tmp_path / "c", on_postgres(postgres_database))  # never started
    observer.write_config()
    a.start()
    try:
        b.start()
        try:
            send(a.port, 1)
            send(b.port, 2)
            data = cluster_status(observer)
            nodes = {n["node"]: n for n in data["nodes"]}
            assert set(nodes) == {"node-a", "node-b"}
            for name, mw, workers in (("node-a", a, 2), ("node-b", b, 1)):
                node = nodes[name]
                assert node["state"] == "up", node
                assert node["age"] < 3 * BEAT, node
                assert node["workers"] == workers and node["heartbeat"] == BEAT
                assert f"127.0.0.1:{mw.port}" in node["listeners"]
                assert node["delivering"] == 0  # queue-only mode: nothing leased
            assert data["backend"] == "postgresql"
            assert data["queue"]["active_messages"] == 2  # the shared queue, both nodes'
            # the heartbeat goes on: a later reading has a later beat
            first = nodes["node-a"]["last_beat"]
            wait_until(
                lambda: (
                    next(
                        n["last_beat"]
                        for n in cluster_status(observer)["nodes"]
                        if n["node"] == "node-a"
                    )
                    > first
                ),
                10,
                "a newer heartbeat of node-a",
            )
            # the daemon's own status (the control socket, the status page) lists them too
            shown = a.cli("status", "--json")
            assert shown.returncode == 0, shown.stderr.decode()
            assert {n["node"] for n in json.loads(shown.stdout)["nodes"]} == set(nodes)
            plain = observer.cli("cluster", "status")
            assert plain.returncode == 0 and b"node-a" in plain.stdout and b"up" in plain.stdout
        finally:
            b.kill()  # SIGKILL: no clean stop, no goodbye
        wait_until(lambda: states(observer)["node-b"] == "stale", 10, "node-b to be stale")
        assert states(observer)["node-a"] == "up"
    finally:
        assert a.stop() == 0
    assert states(observer) == {"node-a": "stopped", "node-b": "stale"}
