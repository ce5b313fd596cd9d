"""Abuse limits kept in memory: connection rate per client address, AUTH failure counters.

``SlidingCounter`` counts events per key over a time window and remembers at
most ``max_keys`` keys (the least recently seen are forgotten first), so a flood
from many addresses cannot grow it without bound. ``ConnectionRateLimit`` is
Sendmail's ClientRate: a client over ``server.max_connection_rate_per_ip`` new
connections per minute is greeted with ``421 4.7.0``. ``AuthThrottle`` counts
failed AUTH attempts per client address and per (user name, address): over either
limit, AUTH from that address (for that user) is answered ``454 4.7.0`` without
checking any password; other addresses are not affected, so nobody can lock a
user out. Each failure is answered later than the one before (exponential in the
failures of the address, or of the user name from all addresses). Trusts the client
address from the socket. Settings: ``server.max_connection_rate_per_ip``,
``auth.failure_window``, ``auth.max_failures_per_ip``, ``auth.max_failures_per_user``,
``auth.failure_delay``, ``auth.max_failure_delay``.

With several worker processes (``[server] workers``) both count in the memory the
workers share (``policy.sharedlimits``, given as ``share``): the limits hold for the
host, not per worker. Without it (one process) they count in ``SlidingCounter``. With
``queue.backend = "postgresql"`` (``cluster_limits``, given as ``cluster``) they count in
the shared database (``policy.limits_postgres``): a client that fails AUTH on one node
and moves to another is still counted, and the rate is the cluster's.

A database that cannot be reached (``StoreError``) is what Postfix does when its
``anvil`` is away: the connection rate is not enforced (logged at most once a minute);
AUTH, whose counters protect passwords, is answered ``454 4.7.0`` (a temporary failure,
RFC 4954) instead of checking a password uncounted (``AuthThrottle`` raises, the
session answers); a failure or success that cannot be recorded is logged.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from mailwright.config.schema import AuthSection, QueueSection
from mailwright.core.reply import Reply
from mailwright.observability import maillog
from mailwright.policy.hooks import Hook, SessionInfo
from mailwright.policy.sharedlimits import WorkerShare
from mailwright.queue.store import StoreError

Clock = Callable[[], float]
MAX_KEYS = 100_000
WARN_EVERY = 60.0  # seconds between two warnings that the shared counters are away
log = logging.getLogger("mailwright.policy")


class EventCounter(Protocol):
    """Events per key over a window: ``SlidingCounter`` or a ``sharedlimits.WindowCounter``."""

    def add(self, key: str) -> int: ...
    def count(self, key: str) -> int: ...
    def clear(self, key: str) -> None: ...


class SharedCounter(Protocol):
    """Events per key over a window in a store that takes time to answer (the cluster's
    database); errors are ``StoreError``."""

    async def add(self, key: str) -> int: ...
    async def count(self, key: str) -> int: ...
    async def clear(self, key: str) -> None: ...


class ClusterCounters(Protocol):
    """The counters every node shares (``policy.limits_postgres.PostgresLimits``)."""

    def connection_rate(self) -> SharedCounter: ...

    def auth_failures(
        self, window: float
    ) -> tuple[SharedCounter, SharedCounter, SharedCounter]: ...


class Immediate:
    """A ``SharedCounter`` on a counter of this host (memory, or the workers' memory)."""

    def __init__(self, counter: EventCounter) -> None:
        self.counter = counter

    async def add(self, key: str) -> int:
        return self.counter.add(key)

    async def count(self, key: str) -> int:
        return self.counter.count(key)

    async def clear(self, key: str) -> None:
        self.counter.clear(key)


def cluster_limits(queue: QueueSection) -> ClusterCounters | None:
    """The counters of the cluster's database, or None when the queue is this host's."""
    if queue.backend != "postgresql":
        return None
    from mailwright.policy.limits_postgres import PostgresLimits  # psycopg only then
    from mailwright.queue.postgres_state import state_database

    return PostgresLimits(state_database(queue))


class SlidingCounter:
    """How many events each key had in the last ``window`` seconds (up to ``cap``)."""

    def __init__(
        self,
        window: float,
        cap: int,
        max_keys: int = MAX_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.window = window
        self.cap = cap
        self.max_keys = max_keys
        self.clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def add(self, key: str) -> int:
        """Count one event now; returns the count in the window including it."""
        events = self._fresh(key)
        if events is None:
            events = deque(maxlen=self.cap)
            self._events[key] = events
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
        self._events.move_to_end(key)
        events.append(self.clock())
        return len(events)

    def count(self, key: str) -> int:
        events = self._fresh(key)
        return len(events) if events is not None else 0

    def clear(self, key: str) -> None:
        self._events.pop(key, None)

    def __len__(self) -> int:
        return len(self._events)

    def _fresh(self, key: str) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        horizon = self.clock() - self.window
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events


class ConnectionRateLimit(Hook):
    """At connect: refuse a client address that opened too many connections this minute."""

    name = "connection-rate"

    def __init__(
        self,
        per_minute: int,
        hostname: str,
        clock: Clock = time.monotonic,
        share: WorkerShare | None = None,
        cluster: ClusterCounters | None = None,
    ) -> None:
        self.per_minute = per_minute
        self.hostname = hostname
        self.counter: SharedCounter
        if cluster is not None:
            self.counter = cluster.connection_rate()
        elif share is not None:
            self.counter = Immediate(share.connection_rate())
        else:
            self.counter = Immediate(SlidingCounter(60.0, per_minute + 1, clock=clock))
        self._warned = float("-inf")

    async def connect(self, session: SessionInfo) -> Reply | None:
        if not self.per_minute or session.is_local:
            return None
        try:
            count = await self.counter.add(session.client_address)
        except StoreError as exc:  # as Postfix without anvil: not enforced meanwhile
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY:
                self._warned = now
                log.warning("connection rate not enforced: %s", exc)
            return None
        if count <= self.per_minute:
            return None
        reply = Reply.of(
            421, "4.7.0", f"{self.hostname} Too many connections per minute from your address"
        )
        maillog.emit(
            None,
            event="connection rate limit exceeded",
            relay=f"[{session.client_address}]",
            reject=str(reply),
        )
        return reply


class AuthThrottle:
    """Failed AUTH attempts per client address, per (user name, address) and per user name.

    Only the first two refuse: an address that failed too often, or that failed too
    often for one user, gets ``454`` (for that user only, in the second case). The
    user name's count over all addresses only makes its failures answer later: a
    guesser spread over many addresses is slowed, yet the real user, from an address
    that did not fail, is never refused nor kept waiting for a correct password.
    ``ip_blocked`` and ``user_blocked`` raise ``StoreError`` when the counters cannot
    be read (the cluster's database is away); ``failed`` and ``succeeded`` log it.
    """

    def __init__(
        self,
        section: AuthSection,
        clock: Clock = time.monotonic,
        share: WorkerShare | None = None,
        cluster: ClusterCounters | None = None,
    ) -> None:
        self.section = section
        self.by_ip: SharedCounter
        self.by_user_ip: SharedCounter
        self.by_user: SharedCounter
        if cluster is not None:
            self.by_ip, self.by_user_ip, self.by_user = cluster.auth_failures(
                section.failure_window
            )
            return
        counters: tuple[EventCounter, EventCounter, EventCounter]
        if share is not None:
            counters = share.auth_failures(section.failure_window)
        else:
            cap = max(section.max_failures_per_ip, section.max_failures_per_user, 32)
            counters = (
                SlidingCounter(section.failure_window, cap, clock=clock),
                SlidingCounter(section.failure_window, cap, clock=clock),
                SlidingCounter(section.failure_window, cap, clock=clock),
            )
        self.by_ip, self.by_user_ip, self.by_user = (Immediate(c) for c in counters)

    async def ip_blocked(self, ip: str) -> bool:
        return await self.by_ip.count(ip) >= self.section.max_failures_per_ip

    async def user_blocked(self, user: str, ip: str) -> bool:
        """Too many failures for ``user`` from this address (other addresses are not affected)."""
        count = await self.by_user_ip.count(_user_at(user, ip))
        return count >= self.section.max_failures_per_user

    async def failed(self, ip: str, user: str) -> float:
        """Count a failure; returns how long to wait before answering it."""
        try:
            failures = await self.by_ip.add(ip)
            if user:
                await self.by_user_ip.add(_user_at(user, ip))
                failures = max(failures, await self.by_user.add(user))
        except StoreError as exc:
            log.warning("AUTH failure from %s not counted: %s", ip, exc)
            failures = 1
        s = self.section
        if not s.failure_delay:
            return 0.0
        return float(min(s.failure_delay * 2 ** min(failures - 1, 30), s.max_failure_delay))

    async def succeeded(self, user: str, ip: str) -> None:
        # the address keeps its count: one valid account must not reset a brute force
        try:
            await self.by_user_ip.clear(_user_at(user, ip))
            await self.by_user.clear(user)
        except StoreError as exc:
            log.warning("AUTH success of %s from %s not recorded: %s", user, ip, exc)


def _user_at(user: str, ip: str) -> str:
    return f"{user}\0{ip}"  # NUL is in neither a user name nor an address
