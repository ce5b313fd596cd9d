"""Run the Mailwright daemon for a benchmark, optionally instrumented (profiling aid only).

``python bench/launch.py --config FILE serve ...`` is ``python -m mailwright ...`` plus, when
asked through the environment:
  MW_SWITCH_INTERVAL=SECONDS  sys.setswitchinterval in the daemon (GIL hand-over experiments)
  MW_WRITER_PRAGMAS="a=1;b=2" extra PRAGMAs on every connection of the SQLite queue store
                              (the writer's and the readers'; experiments)
  MW_PAGE_SIZE=N              experiment: page size of a new queue database
  MW_CPROFILE=FILE            run the daemon under cProfile (the event loop thread only) and
                              write the stats to FILE at exit (pstats format)
  MW_WRITER_STATS=FILE        time every group commit of the queue writer; at exit, write
                              the batch sizes and commit durations (percentiles) to FILE,
                              the operations by type, and the wall time the writer spent
                              per kind of SQL statement
  MW_PG_ROUNDTRIPS=FILE       with a PostgreSQL queue: each process appends "PID COUNT" to
                              FILE when it closes its queue store (at a clean stop): the
                              round trips it made to the server (queue.postgres_wire)
Trusts its environment (a benchmark harness). Reads no settings itself.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
import time
from typing import Any


def _instrument_writer(path: str) -> None:
    from mailwright.queue import writer

    sizes: list[int] = []
    durations: list[float] = []
    kinds: dict[str, int] = {}  # operations by type
    original = writer.QueueWriter._apply

    def timed_apply(self: Any, batch: list[Any]) -> None:
        start = time.perf_counter()
        original(self, batch)
        durations.append(time.perf_counter() - start)
        sizes.append(len(batch))
        for request in batch:
            name = type(request.op).__name__
            kinds[name] = kinds.get(name, 0) + 1

    writer.QueueWriter._apply = timed_apply  # type: ignore[method-assign]
    statements = _time_statements()

    def report() -> None:
        if not durations:
            return
        ms = sorted(d * 1000 for d in durations)
        n = len(ms)
        pct = {p: ms[min(n - 1, int(n * p / 100))] for p in (50, 90, 99)}
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                f"commits={n} ops={sum(sizes)} mean_batch={sum(sizes) / n:.2f} "
                f"max_batch={max(sizes)} commit_ms_p50={pct[50]:.2f} p90={pct[90]:.2f} "
                f"p99={pct[99]:.2f} max={ms[-1]:.2f} busy_s={sum(ms) / 1000:.2f}\n"
            )
            ops = ", ".join(f"{name} {count}" for name, count in sorted(kinds.items()))
            f.write(f"#   ops: {ops}\n")
            for kind, (count, seconds) in sorted(statements.items(), key=lambda kv: -kv[1][1]):
                each = seconds / count * 1e6
                f.write(f"#   sql {kind}: {count} calls, {seconds:.3f} s, {each:.0f} us each\n")

    atexit.register(report)


class _TimedConnection:
    """Delegates to a sqlite3 connection, timing execute/executemany by statement kind."""

    def __init__(self, conn: Any, totals: dict[str, list[float]]) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_totals", totals)

    def _timed(self, method: str, sql: str, *args: Any) -> Any:
        words = sql.split()
        kind = " ".join(words[:3] if words[0].upper() == "INSERT" else words[:1]).upper()
        start = time.perf_counter()
        try:
            return getattr(self._conn, method)(sql, *args)
        finally:
            entry = self._totals.setdefault(kind, [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - start

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed("execute", sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._timed("executemany", sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)


def _time_statements() -> dict[str, list[float]]:
    """Time the statements of the writer's connection (the first one the store opens)."""
    from mailwright.queue import sqlite

    totals: dict[str, list[float]] = {}
    original = sqlite.SqliteQueueStore._connect
    wrapped: list[bool] = []

    def connect(self: Any) -> Any:
        conn = original(self)
        if wrapped:
            return conn
        wrapped.append(True)
        return _TimedConnection(conn, totals)

    sqlite.SqliteQueueStore._connect = connect  # type: ignore[method-assign]
    return totals


def _extra_pragmas(pragmas: str) -> None:
    from mailwright.queue import sqlite

    original = sqlite.SqliteQueueStore._connect

    def connect(self: Any) -> Any:
        conn = original(self)
        for pragma in filter(None, pragmas.split(";")):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    sqlite.SqliteQueueStore._connect = connect  # type: ignore[method-assign]


def _page_size(size: int) -> None:
    from mailwright.queue import sqlite

    original = sqlite.configure_writer

    def configure(conn: Any, path: Any, max_bytes: int | None) -> None:
        conn.execute(f"PRAGMA page_size = {size}")  # before WAL mode: only a new file takes it
        original(conn, path, max_bytes)

    sqlite.configure_writer = configure  # type: ignore[assignment]


def _report_round_trips(path: str) -> None:
    from mailwright.queue import postgres

    original = postgres.PostgresQueueStore.close
    reported: dict[int, int] = {}  # id(store): the count already written

    def close(self: Any) -> None:
        original(self)
        count = self.round_trips.count - reported.get(id(self), 0)
        if count:
            reported[id(self)] = self.round_trips.count
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()} {count}\n")

    postgres.PostgresQueueStore.close = close  # type: ignore[method-assign]


def main() -> None:
    if os.environ.get("MW_PG_ROUNDTRIPS"):
        _report_round_trips(os.environ["MW_PG_ROUNDTRIPS"])
    if os.environ.get("MW_PAGE_SIZE"):
        _page_size(int(os.environ["MW_PAGE_SIZE"]))
    pragmas = os.environ.get("MW_WRITER_PRAGMAS")
    if pragmas:
        _extra_pragmas(pragmas)
    interval = os.environ.get("MW_SWITCH_INTERVAL")
    if interval:
        sys.setswitchinterval(float(interval))
    stats = os.environ.get("MW_WRITER_STATS")
    if stats:
        _instrument_writer(stats)
    sys.argv[0] = "mailwright"
    profile_to = os.environ.get("MW_CPROFILE")
    if not profile_to:
        runpy.run_module("mailwright", run_name="__main__", alter_sys=True)
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(runpy.run_module, "mailwright", run_name="__main__", alter_sys=True)
    finally:
        profiler.dump_stats(profile_to)


if __name__ == "__main__":
    main()
