"""Round trips and statements per message of the PostgreSQL queue store, phase by phase.

Drives ``PostgresQueueStore`` directly (one thread, no daemon) with the batches the queue
writer sees: ``--rounds`` times, one commit of ``--batch`` new messages (accept), one
ClaimDue of them (claim), their headers and bodies read as a delivery reads them (read),
and one commit of a RecordResults per message, each delivered (result, which deletes the
message). Prints, per phase, the round trips per message (the store's own count,
``queue.postgres_wire``), the statements per message the server ran (pg_stat_statements,
which counts BEGIN, COMMIT and SAVEPOINT only until psycopg has prepared them: after five
of each), and the CPU time per message of this process (``time.process_time``: the
store's side, psycopg included) and, with a server of its own, of the server's processes
(their ``/proc/PID/schedstat``, the bench's own statistics connection left out).

Without ``--url`` it starts a PostgreSQL of its own (initdb in a temp dir, a free loopback
port, fsync on, as the tests do: needs root); with ``--url`` the database must have the
pg_stat_statements extension loaded (``shared_preload_libraries``), and gets a fresh
schema ``rt_bench`` (dropped afterwards).

Usage (from the repository root):
    /work/main/.venv/bin/python bench/pg_roundtrips.py [--batch 10] [--rounds 20] [--size 1024]
With ``--profile FILE`` the accept phase runs under cProfile (its CPU figures then include
the profiler's cost) and its statistics are written to FILE (``python -m pstats FILE``).
Trusts its arguments. Reads no settings.
"""

from __future__ import annotations

import argparse
import cProfile
import os
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
def private_server() -> Iterator[tuple[str, Path | None]]:
    root = Path(tempfile.mkdtemp(prefix="mw-pgrt-"))
    try:
        server = PrivatePostgres(root)
        with open(server.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
        server.start()
        try:
            yield server.url(), server.data
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


class ServerCpu:
    """CPU time (ns) of a local server's processes: the postmaster's children, from
    ``/proc`` (schedstat: nanoseconds on a CPU), without the ``skip`` process."""

    def __init__(self, data: Path, skip: int) -> None:
        self.postmaster = int((data / "postmaster.pid").read_text().split()[0])
        self.skip = skip

    def ns(self) -> int:
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.skip:
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) != self.postmaster:
                    continue
                total += int(Path(f"/proc/{entry}/schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue  # a process that ended meanwhile
        return total


class Meter:
    """Round trips (the store's count), statements (the server's) and CPU per phase."""

    def __init__(self, url: str, store: PostgresQueueStore, data: Path | None) -> None:
        self.admin = psycopg.connect(url, autocommit=True)
        self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.store = store
        self.server = None if data is None else ServerCpu(data, self.admin.info.backend_pid)
        self.totals: dict[str, list[float]] = {}
        self.profiler: cProfile.Profile | None = None

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
        server = self.server.ns() if self.server else 0
        profiler = self.profiler if phase == "accept" else None
        cpu = time.process_time()
        if profiler is not None:
            profiler.enable()
        out = work(*args)
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - cpu
        server = (self.server.ns() - server) / 1e6 if self.server else 0.0
        got = self.totals.setdefault(phase, [0, 0, 0, 0.0, 0.0])
        got[0] += self.store.round_trips.count - trips
        got[1] += self.statements()
        got[2] += messages
        got[3] += cpu * 1e3
        got[4] += server
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
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the accept phase")
    args = parser.parse_args()
    with private_server() if args.url is None else _given(args.url) as (url, data):
        run(url, data, args.batch, args.rounds, args.size, args.profile)


@contextmanager
def _given(url: str) -> Iterator[tuple[str, Path | None]]:
    yield url, None  # a server elsewhere: its CPU is not measured


def run(
    url: str, data: Path | None, batch: int, rounds: int, size: int, profile: Path | None
) -> None:
    content = (b"X" * 78 + b"\r\n") * (size // 80 + 1)
    store = PostgresQueueStore(url)
    store.open()
    meter = Meter(url, store, data)
    if profile is not None:
        meter.profiler = cProfile.Profile()
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
    if meter.profiler is not None and profile is not None:
        meter.profiler.dump_stats(profile)
    print(f"PostgreSQL queue store, {batch} messages of {size} octets per commit, {rounds} rounds")
    print("| phase | round trips/msg | statements/msg | client CPU ms/msg | server CPU ms/msg |")
    print("|---|---|---|---|---|")
    sums = [0.0] * 5
    for phase, got in meter.totals.items():
        print(row(phase, got, data is not None))
        sums = [a + b for a, b in zip(sums, got, strict=True)]
    sums[2] = meter.totals["accept"][2]
    print(row("relayed message (all)", sums, data is not None))


def row(name: str, got: list[float], server: bool) -> str:
    trips, statements, n, client, server_ms = got
    server_text = f"{server_ms / n:.3f}" if server else "-"
    return f"| {name} | {trips / n:.2f} | {statements / n:.2f} | {client / n:.3f} | {server_text} |"


if __name__ == "__main__":
    main()
