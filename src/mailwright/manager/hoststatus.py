"""The host-status cache: a next hop that just failed at connection level is not
dialled again for every message (Sendmail's host status, Postfix's dead-destination
cache).

Keyed by ``NextHop.key``; entries expire after ``queue.host_status_timeout``.
A success clears the entry at once. Memory only: a restart forgets, which only
costs one more connection attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwright.core.reply import Reply


@dataclass(slots=True)
class DeadHost:
    reply: Reply
    remote_mta: str
    until: float


class HostStatusCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._dead: dict[str, DeadHost] = {}

    def dead(self, key: str, now: float) -> DeadHost | None:
        entry = self._dead.get(key)
        if entry is None:
            return None
        if entry.until <= now:
            del self._dead[key]
            return None
        return entry

    def mark_dead(self, key: str, reply: Reply, remote_mta: str, now: float) -> None:
        if self.ttl > 0:
            self._dead[key] = DeadHost(reply, remote_mta, now + self.ttl)

    def mark_alive(self, key: str) -> None:
        self._dead.pop(key, None)

    def clear(self) -> None:
        self._dead.clear()

    def snapshot(self, now: float) -> dict[str, DeadHost]:
        return {k: v for k, v in self._dead.items() if v.until > now}
