"""The queue store's share of relaying: insert, claim, record and delete, batch by batch.

Drives ``SqliteQueueStore.apply_batch`` directly (one thread, no daemon, no network) with
the batches the queue writer sees while relaying: each commit carries ``--batch`` new
messages, one ClaimDue, and the results of the messages claimed one commit earlier (which
deletes them). Prints the wall and CPU time per message and the time per SQL statement
kind, so that store changes can be compared without the noise of a shared machine.

Usage (from the repository root):
    /work/main/.venv/bin/python bench/queue_cycle.py [--messages 3000] [--size 102400]
        [--batch 5] [--pragma secure_delete=FAST] [--dir /tmp]
Trusts its arguments. Reads no settings.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "src"),
]

from tests.unit.queue.conftest import build_message  # noqa: E402

from mailwright.queue.sqlite import SqliteQueueStore  # noqa: E402
from mailwright.queue.store import (  # noqa: E402
    ClaimDue,
    InsertMessage,
    Op,
    RecipientResult,
    RecipientState,
    RecordResults,
    StoredRecipient,
)


def body(size: int) -> bytes:
    line = b"X" * 78 + b"\r\n"
    return (line * (size // len(line) + 1))[:size]


def timed_statements(store: SqliteQueueStore, totals: dict[str, list[float]]) -> None:
    """Wrap the write connection so every statement is timed by kind."""
    conn = store._conn
    assert conn is not None

    class Timed:
        def __getattr__(self, name: str) -> Any:
            return getattr(conn, name)

        def _run(self, method: str, sql: str, *args: Any) -> Any:
            words = sql.split()
            kind = " ".join(words[:3] if words[0].upper() == "INSERT" else words[:1]).upper()
            start = time.perf_counter()
            try:
                return getattr(conn, method)(sql, *args)
            finally:
                entry = totals.setdefault(kind, [0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - start

        def execute(self, sql: str, *args: Any) -> Any:
            return self._run("execute", sql, *args)

        def executemany(self, sql: str, *args: Any) -> Any:
            return self._run("executemany", sql, *args)

    store._conn = Timed()  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--size", type=int, default=102400)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--pragma", action="append", default=[])
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    content = body(args.size)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = SqliteQueueStore(Path(tmp) / "queue.db")
        store.open()
        assert store._conn is not None
        for pragma in args.pragma:
            store._conn.execute(f"PRAGMA {pragma}")
        totals: dict[str, list[float]] = {}
        timed_statements(store, totals)
        kinds: Counter[str] = Counter()
        claimed: list[StoredRecipient] = []
        now = time.time()
        sent = done = 0
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        while done < args.messages:
            ops: list[Op[Any]] = []
            for _ in range(min(args.batch, args.messages - sent)):
                ops.append(InsertMessage(build_message(body=content, received_at=now)))
                sent += 1
            ops.append(ClaimDue(now + 1, 200, "bench", 600.0))
            results = [
                RecipientResult(r.message_id, r.index, RecipientState.DELIVERED, 0.0, now, "2.0.0")
                for r in claimed
            ]
            if results:
                ops.append(RecordResults(results))
            kinds.update(type(op).__name__ for op in ops)
            out = store.apply_batch(ops)
            for result in out:
                if isinstance(result, BaseException):
                    raise result
            done += len(claimed)
            claimed = next(r for r in out if isinstance(r, list))
        elapsed = time.perf_counter() - start
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        store.close()
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    n = args.messages
    print(
        f"{n} messages of {args.size} octets, {args.batch} per commit: "
        f"{elapsed / n * 1e6:.0f} us/msg wall, {cpu / n * 1e6:.0f} us/msg CPU "
        f"(sys {(usage1.ru_stime - usage0.ru_stime) / n * 1e6:.0f})"
    )
    print("ops: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    for kind, (count, seconds) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        each = seconds / count * 1e6
        print(f"  {kind}: {count} calls, {seconds / n * 1e6:.0f} us/msg, {each:.0f} us each")


if __name__ == "__main__":
    main()
