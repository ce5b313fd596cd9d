"""Counting the PostgreSQL queue store's round trips to the server.

A round trip is a time the client waited for the server's answer: one per statement run
outside pipeline mode, one per sync or result fetch inside it. ``CountingConnection`` is
the store's connection class (the write connection and the read pool's); it counts, in
the ``RoundTrips`` its store gives it, every call of psycopg's ``wait`` (every network
exchange psycopg makes) in which psycopg had sent everything and had to wait to read.
Statements queued in pipeline mode wait for nothing and are not counted; their answers
come with the next sync. The count is what ``bench/cluster.sh`` reports per message and
what the store's tests hold the batch engine to.

Trusts psycopg's wait protocol (generators that yield what they wait for). Reads no
settings.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import psycopg
from psycopg.abc import PQGen
from psycopg.waiting import Wait

RV = TypeVar("RV")


class RoundTrips:
    """A process's or a store's count of round trips (read it, never reset it: take
    differences)."""

    def __init__(self) -> None:
        self.count = 0


class CountingConnection(psycopg.Connection[dict[str, Any]]):
    """A connection that adds its round trips to ``round_trips`` (when set)."""

    round_trips: RoundTrips | None = None

    def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        counter = self.round_trips
        if counter is not None:
            gen = _counting(gen, counter)
        return super().wait(gen, *args, **kwargs)


def _counting(gen: PQGen[RV], counter: RoundTrips) -> PQGen[RV]:
    """``gen``, counting one round trip the first time it waits for reading alone."""
    waited = False
    try:
        wait = next(gen)
        while True:
            if not waited and wait == Wait.R:
                waited = True
                counter.count += 1
            ready = yield wait
            wait = gen.send(ready)
    except StopIteration as stop:
        return cast(RV, stop.value)
