"""A large backlog: how the queue store and the admin commands behave with N messages queued.

After an outage a queue holds tens of thousands of deferred messages; the scheduler
must still find the few that are due cheaply, and ``mailq`` / ``queue list`` /
``mailwright status`` must still answer. This fills a fresh store with ``--messages``
deferred messages (one recipient each, ``--size`` octets of body), then times:
opening the store (crash recovery), a claim when nothing is due, ``next_due``, the
queue counts (status page, metrics), listing every message (``mailq``), the real
``mailq`` and ``mailwright queue list --json`` commands against it, and a claim of
``--due`` messages made due by a selective flush.

Usage (from the repository root):
    /work/main/.venv/bin/python bench/queue_scale.py [--messages 100000] [--size 1024]
        [--due 1000] [--dir /tmp]
Trusts its arguments. Reads no settings (it writes a config for the commands).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.unit.queue.conftest import build_message  # noqa: E402

from mailwright.queue.sqlite import SqliteQueueStore  # noqa: E402
from mailwright.queue.store import ClaimDue, InsertMessage, RescheduleNow  # noqa: E402

BATCH = 500  # messages per commit while filling (what a busy writer's batches approach)


def timed(what: str, fn: Callable[[], Any], unit: float = 1e3, suffix: str = "ms") -> Any:
    start = time.perf_counter()
    result = fn()
    print(f"{what:<58} {(time.perf_counter() - start) * unit:10.1f} {suffix}")
    return result


def fill(store: SqliteQueueStore, count: int, size: int, later: float) -> list[str]:
    body = (b"x" * 76 + b"\r\n") * (size // 78 + 1)
    ids: list[str] = []
    for start in range(0, count, BATCH):
        ops = []
        for i in range(start, min(count, start + BATCH)):
            msg = build_message(recipients=[f"user{i}@dest{i % 500}.example"], body=body[:size])
            msg.first_attempt = later  # deferred: not due for an hour
            ops.append(InsertMessage(msg))
            ids.append(msg.queue_id)
        store.apply_batch(ops)
    return ids


def command(config: Path, *args: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), MAILWRIGHT_CONFIG=str(config))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mailwright", *args], env=env, check=True, stdout=subprocess.DEVNULL
    )
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        qdir = Path(tmp) / "queue"
        qdir.mkdir()
        db = qdir / "queue.db"
        now = time.time()
        store = SqliteQueueStore(db)
        store.open()
        print(f"# {args.messages} deferred messages of {args.size} octets, {BATCH} per commit")
        start = time.perf_counter()
        ids = fill(store, args.messages, args.size, now + 3600)
        secs = time.perf_counter() - start
        print(f"{'fill':<58} {secs:10.1f} s ({args.messages / secs:.0f} msgs/s)")
        print(f"{'database size':<58} {db.stat().st_size / 2**20:10.1f} MiB")
        store.close()

        store = SqliteQueueStore(db)
        timed("open (crash recovery: clear leases)", store.open)
        claim = ClaimDue(now=now, limit=100, owner="bench", lease_seconds=60)
        got = timed("claim when nothing is due", lambda: store.apply_batch([claim]))
        assert got == [[]], got
        timed("next_due", store.next_due)
        timed("queue counts (status page, metrics)", lambda: store.queue_counts(now))
        listed = timed("list every message (mailq's data)", store.list_messages)
        assert len(listed) == args.messages
        chosen = ids[:: max(1, len(ids) // args.due)][: args.due]
        timed(
            f"make {len(chosen)} messages due (selective flush)",
            lambda: store.apply_batch([RescheduleNow(now, queue_ids=chosen)]),
        )
        claim = ClaimDue(now=now + 1, limit=len(chosen), owner="bench", lease_seconds=60)
        got = timed(f"claim the {len(chosen)} due recipients", lambda: store.apply_batch([claim]))
        assert len(got[0]) == len(chosen), len(got[0])
        store.close()

        config = Path(tmp) / "mailwright.toml"
        config.write_text(f'[queue]\ndirectory = "{qdir}"\n[service]\nuser = "root"\n')
        for what, args in (
            ("mailq (Sendmail layout, whole queue)", ("queue", "list")),
            ("mailwright queue list --json", ("queue", "list", "--json")),
        ):
            print(f"{what:<58} {command(config, *args):10.1f} ms")


if __name__ == "__main__":
    main()
