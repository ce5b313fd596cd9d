"""The nodes tables on a real PostgreSQL: schema version 2 migrated from 1, a node's
heartbeat rows, its leased recipients counted as its deliveries, dead processes dropped."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from mailwright.queue import postgres_schema
from mailwright.queue.lease import _boot_id, new_owner
from mailwright.queue.store import ClaimDue, InsertMessage
from tests.support.postgres import sql_rows, sql_run

from .conftest import build_message


@pytest.fixture
def pg_store(postgres_database: str) -> Iterator[Any]:
    from mailwright.queue.postgres import PostgresQueueStore

    store = PostgresQueueStore(postgres_database)
    store.open()
    yield store
    store.close()


def test_a_version_1_database_gets_the_nodes_tables(postgres_database: str) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    store = PostgresQueueStore(postgres_database)
    store.open()
    store.close()
    sql_run(postgres_database, "DROP TABLE nodes, node_processes")
    sql_run(postgres_database, "DROP TABLE greylist_triplets, greylist_clients, host_status,"
            " mta_sts_policies, limit_events")  # version 3's  # fmt: skip
    sql_run(postgres_database, "DROP TABLE tlsrpt_counts, tlsrpt_runs")  # version 4's
    sql_run(postgres_database, "DROP TABLE dmarc_results, dmarc_report_runs")  # version 5's
    sql_run(postgres_database, "ALTER TABLE messages DROP COLUMN requiretls")  # version 6's
    sql_run(postgres_database, "DROP TABLE tlsrpt_posts")  # version 7's
    sql_run(postgres_database, "UPDATE mailwright_schema SET version = 1")
    store.open()
    store.close()
    version = sql_rows(postgres_database, "SELECT version FROM mailwright_schema")
    assert version == [(postgres_schema.SCHEMA_VERSION,)]
    assert sql_rows(postgres_database, "SELECT count(*) FROM nodes") == [(0,)]


def test_heartbeat_deliveries_and_a_clean_stop(pg_store: Any) -> None:
    from mailwright.queue.postgres_nodes import NodeRegistry, read_nodes

    mine = NodeRegistry(pg_store, "mx-1", 0.5)
    other = NodeRegistry(pg_store, "mx-2", 10.0)
    mine.join()
    mine.register(workers=1, listeners="127.0.0.1:25")
    other.register(workers=4, listeners="")
    pg_store.apply_batch([InsertMessage(build_message("NODES", ["a@x.test", "b@x.test"]))])
    claimed = pg_store.apply_batch([ClaimDue(2e9, 10, new_owner(), 300.0)])[0]
    assert len(claimed) == 2
    nodes = {n.node: n for n in read_nodes(pg_store)}
    assert (nodes["mx-1"].delivering, nodes["mx-2"].delivering) == (2, 0)
    assert (nodes["mx-1"].state, nodes["mx-2"].state) == ("up", "up")
    assert nodes["mx-1"].host == socket.gethostname() and nodes["mx-2"].workers == 4
    before = nodes["mx-1"].last_beat
    mine.beat("127.0.0.1:2525")
    after = {n.node: n for n in read_nodes(pg_store)}["mx-1"]
    assert after.last_beat > before and after.listeners == "127.0.0.1:2525"
    mine.stop()
    mine.leave()
    nodes = {n.node: n for n in read_nodes(pg_store)}
    assert nodes["mx-1"].state == "stopped" and nodes["mx-1"].delivering == 0


def test_a_beat_drops_the_rows_of_this_hosts_dead_processes(
    pg_store: Any, postgres_database: str
) -> None:
    from mailwright.queue.postgres_nodes import NodeRegistry

    registry = NodeRegistry(pg_store, "mx-1", 1.0)
    registry.register(workers=2, listeners="")
    registry.join()
    dead = f"{socket.gethostname()}:999999999:{_boot_id()}.1"  # no such pid
    far = "elsewhere.test:1:abc.1"  # another host's: not ours to judge
    for process in (dead, far):
        sql_run(postgres_database, f"INSERT INTO node_processes VALUES ('{process}', 'mx-1')")
    registry.beat("")
    left = {r[0] for r in sql_rows(postgres_database, "SELECT process FROM node_processes")}
    assert dead not in left and far in left and len(left) == 2
