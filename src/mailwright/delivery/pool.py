"""Idle SMTP/LMTP sessions kept per destination for the next message (connection reuse).

After a transaction the agent puts its session back here, keyed by the next
hop; the next request to that next hop takes it (most recently used first)
instead of connecting, greeting and saying EHLO again. The RSET that clears
the old transaction is sent when the session is used again, pipelined with the
next MAIL FROM, and doubles as the check that the session still lives. A
session idle for ``idle_timeout`` seconds, older than ``max_age``, or beyond
``max_idle`` per destination is closed with QUIT. Trusts nothing: a session
the peer closed is dropped when taken. Reads no settings (the agent passes them).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from mailwright.delivery.session import ClientSession
from mailwright.observability import metrics


@dataclass(slots=True)
class _Idle:
    session: ClientSession
    timer: asyncio.TimerHandle


class SessionPool:
    def __init__(
        self, idle_timeout: float = 10.0, max_idle: int = 20, max_age: float = 300.0
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle  # per destination
        self.max_age = max_age
        self._idle: dict[str, list[_Idle]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.reused = 0  # sessions handed out again (for tests and statistics)

    def take(self, key: str) -> ClientSession | None:
        """An idle, live session for ``key``, or None."""
        entries = self._idle.get(key)
        while entries:
            entry = entries.pop()
            entry.timer.cancel()
            if self._usable(entry.session):
                self.reused += 1
                metrics.outbound(key, "reused")
                return entry.session
            self._close(entry.session)
        return None

    def put(self, key: str, session: ClientSession) -> None:
        entries = self._idle.setdefault(key, [])
        if not self._usable(session) or len(entries) >= self.max_idle or self.idle_timeout <= 0:
            self._close(session)
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.idle_timeout, self._expire, key, session)
        entries.append(_Idle(session, timer))

    def discard(self, session: ClientSession) -> None:
        """QUIT a session that must not be used again (``close`` waits for it too)."""
        self._close(session)

    def idle_count(self, key: str | None = None) -> int:
        if key is not None:
            return len(self._idle.get(key, ()))
        return sum(len(v) for v in self._idle.values())

    async def close(self) -> None:
        """QUIT every idle session and wait for all of them to close."""
        for entries in self._idle.values():
            for entry in entries:
                entry.timer.cancel()
                self._close(entry.session)
        self._idle.clear()
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _usable(self, session: ClientSession) -> bool:
        return session.alive and time.monotonic() - session.created < self.max_age

    def _expire(self, key: str, session: ClientSession) -> None:
        entries = self._idle.get(key, [])
        for i, entry in enumerate(entries):
            if entry.session is session:
                del entries[i]
                self._close(session)
                return

    def _close(self, session: ClientSession) -> None:
        task = asyncio.get_running_loop().create_task(session.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
