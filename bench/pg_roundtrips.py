"""Round trips and statements per message of the PostgreSQL queue store, phase by phase.

Drives ``PostgresQueueStore`` directly (one thread, no daemon) with the batches the queue
writer sees: ``--rounds`` times, one commit of ``--batch`` new messages (accept), one
ClaimDue of them (claim), their headers and bodies read as a delivery reads them (read),
and one commit of a RecordResults per message, each delivered (result, which deletes the
message). Prints, per phase, the round trips per message (the store's own count,
``queue.postgres_wire``) and the statements per message the server ran (pg_stat_statements,
BEGIN, COMMIT and SAVEPOINT included).

Without ``--url`` it starts a PostgreSQL of its own (initdb in a temp dir, a free loopback
port, fsync on, as the tests do: needs root); with ``--url`` the database must have the
pg_stat_statements extension loaded (``shared_preload_libraries``), and gets a fresh
schema ``rt_bench`` (dropped afterwards).

Usage (from the repository root):
    /work/main/.venv/bin/python bench/pg_roundtrips.py [--batch 10] [--rounds 20] [--size 1024]
Trusts its arguments. Reads no settings.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "src"),
]

import psycopg  # noqa: E402
from tests.support.postgres import PrivatePostgres  # noqa: E402
from tests.unit.queue.conftest import build_message  # noqa: E402

from mailwright.queue.postgres import PostgresQueueStore  # noqa: E402
from mailwright.queue.store import (  # noqa: E402
    ClaimDue,
    InsertMessage,
    Op,
    RecipientResult,
    RecipientState,
    RecordResults,
)


@contextmanager
def private_server() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="mw-pgrt-"))
    try:
        server = PrivatePostgres(root)
        with open(server.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
        server.start()
        try:
            yield server.url()
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Meter:
    """Round trips (the store's count) and statements (the server's) per phase."""

    def __init__(self, url: str, store: PostgresQueueStore) -> None:
        self.admin = psycopg.connect(url, autocommit=True)
        self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.store = store
        self.totals: dict[str, list[int]] = {}

    def statements(self) -> int:
        row = self.admin.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND query NOT LIKE '%pg_stat_statements%'"
            " AND userid = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        ).fetchone()
        return int(row[0]) if row else 0

    def measure(self, phase: str, messages: int, work: Callable[..., Any], *args: Any) -> Any:
        self.admin.execute("SELECT pg_stat_statements_reset()")
        trips = self.store.round_trips.count
        out = work(*args)
        got = self.totals.setdefault(phase, [0, 0, 0])
        got[0] += self.store.round_trips.count - trips
        got[1] += self.statements()
        got[2] += messages
        return out


def apply(store: PostgresQueueStore, ops: list[Op[Any]]) -> list[object]:
    results = store.apply_batch(ops)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def read(store: PostgresQueueStore, queue_ids: list[str]) -> None:
    """What a delivery reads of each message: its headers and its body."""
    for queue_id in queue_ids:
        store.read_headers(queue_id)
        b"".join(store.read_body(queue_id))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=None)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    with private_server() if args.url is None else _given(args.url) as url:
        run(url, args.batch, args.rounds, args.size)


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


def run(url: str, batch: int, rounds: int, size: int) -> None:
    content = (b"X" * 78 + b"\r\n") * (size // 80 + 1)
    store = PostgresQueueStore(url)
    store.open()
    meter = Meter(url, store)
    now = time.time()
    for _ in range(rounds):
        inserts: list[Op[Any]] = [
            InsertMessage(build_message(body=content[:size], received_at=now)) for _ in range(batch)
        ]
        meter.measure("accept", batch, apply, store, inserts)
        claim: list[Op[Any]] = [ClaimDue(now + 1, batch, "bench", 600.0)]
        (claimed,) = meter.measure("claim", batch, apply, store, claim)
        assert isinstance(claimed, list) and len(claimed) == batch, claimed
        meter.measure("read", batch, read, store, [r.message_id for r in claimed])
        done = RecipientState.DELIVERED
        results: list[Op[Any]] = [
            RecordResults([RecipientResult(r.message_id, r.index, done, 0.0, now, "2.0.0")])
            for r in claimed
        ]
        meter.measure("result", batch, apply, store, results)
    store.close()
    print(f"PostgreSQL queue store, {batch} messages of {size} octets per commit, {rounds} rounds")
    print("| phase | round trips/msg | statements/msg |")
    print("|---|---|---|")
    trips = statements = 0
    for phase, (t, s, n) in meter.totals.items():
        print(f"| {phase} | {t / n:.2f} | {s / n:.2f} |")
        trips, statements = trips + t, statements + s
    n = meter.totals["accept"][2]
    print(f"| relayed message (all) | {trips / n:.2f} | {statements / n:.2f} |")


if __name__ == "__main__":
    main()
