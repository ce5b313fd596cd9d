"""Failed TLS report POSTs (RFC 8460 5.4) in ``daemon.tlsreports``: the back-off doubles up
to four hours and a report is given up a day after its first attempt. A real SQLite store;
the clock is the test's (no waiting)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

from mailwright.config.schema import Settings
from mailwright.daemon.tlsreports import MAX_RETRY_INTERVAL, RETRY_FOR, TlsReporting
from mailwright.routing.tlsrpt_store import PendingPost, SqliteReportStore

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_back_off_doubles_to_four_hours_then_a_day_gives_up(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "tlsrpt.db")
    settings = Settings.model_validate(
        {"hostname": "mx.a.test", "tls_reporting": {"post_retry_interval": "5m"}}
    )
    clock = Clock()
    reporting = TlsReporting(
        lambda: settings, None, enqueue=None, sends=True, store=store, clock=clock
    )
    post = PendingPost("https://r.b.test/", "b.test", "2027-01-15", b"gz", T0, T0, 0)
    waits = []

    async def main() -> None:
        nonlocal post
        while True:
            said = await reporting._later(post)
            with sqlite3.connect(tmp_path / "tlsrpt.db") as db:
                kept = db.execute("SELECT next_attempt, attempts FROM tlsrpt_posts").fetchall()
            if not kept:
                assert said.endswith(f"given up after {post.attempts + 1} attempts"), said
                return
            [(following, attempts)] = kept
            assert attempts == post.attempts + 1 and said.startswith("; tried again in ")
            waits.append(following - clock.now)
            post = dataclasses.replace(post, next_attempt=following, attempts=attempts)
            clock.now = following

    asyncio.run(main())
    assert waits[:7] == [300.0, 600.0, 1200.0, 2400.0, 4800.0, 9600.0, MAX_RETRY_INTERVAL]
    assert set(waits[6:]) == {MAX_RETRY_INTERVAL}
    assert clock.now - T0 >= RETRY_FOR and clock.now - T0 < RETRY_FOR + MAX_RETRY_INTERVAL
