"""Greylisting decisions with a fake clock: the store, network grouping, whitelists, the filter."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.config.schema import Settings
from mailwright.core.address import Address
from mailwright.core.envelope import MailParams, Recipient
from mailwright.core.reply import Reply
from mailwright.policy.filters import registry
from mailwright.policy.filters.greylist import (
    GreylistFilter,
    GreylistOptions,
    client_network,
    recipient_listed,
)
from mailwright.policy.greylist_store import (
    PURGE_INTERVAL,
    GreylistDatabase,
    GreylistStore,
    GreylistTimes,
    Outcome,
    Triplet,
)
from mailwright.policy.hooks import SessionInfo, Transaction

DAY = 86400.0
TIMES = GreylistTimes(delay=300, retry_window=2 * DAY, expire=35 * DAY, auto_whitelist=0)
T = Triplet("192.0.2.0/24", "a@x.test", "b@mx.test")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Any]:
    """Each backend: this host's SQLite file, the shared PostgreSQL database."""
    if request.param == "sqlite":
        sqlite = GreylistStore(tmp_path / "greylist.db", clock)
        yield sqlite
        sqlite.close()
        return
    from tests.support.postgres import state_database

    database = state_database(request.getfixturevalue("postgres_database"))
    from mailwright.policy.greylist_postgres import PostgresGreylistStore

    yield PostgresGreylistStore(database, clock)
    database.close()


def test_first_attempt_deferred_for_the_whole_delay(store: GreylistDatabase) -> None:
    verdict = store.check(T, TIMES, "q1")
    assert (verdict.outcome, verdict.wait, verdict.accepted) == (Outcome.NEW, 300, False)


def test_early_retry_deferred_for_what_is_left(store: GreylistDatabase, clock: Clock) -> None:
    store.check(T, TIMES, "q1")
    clock.now += 120
    verdict = store.check(T, TIMES, "q2")
    assert (verdict.outcome, verdict.wait) == (Outcome.EARLY, 180)


def test_retry_after_delay_passes_then_known(store: GreylistDatabase, clock: Clock) -> None:
    store.check(T, TIMES, "q1")
    clock.now += 301
    verdict = store.check(T, TIMES, "q2")
    assert (verdict.outcome, verdict.waited, verdict.accepted) == (Outcome.PASSED, 301, True)
    clock.now += 10 * DAY
    assert store.check(T, TIMES, "q3").outcome is Outcome.KNOWN


def test_retry_after_window_starts_again(store: GreylistDatabase, clock: Clock) -> None:
    store.check(T, TIMES, "q1")
    clock.now += 2 * DAY + 1
    assert store.check(T, TIMES, "q2").outcome is Outcome.NEW
    clock.now += 301
    assert store.check(T, TIMES, "q3").outcome is Outcome.PASSED


def test_known_triplet_expires_unless_used(store: GreylistDatabase, clock: Clock) -> None:
    store.check(T, TIMES, "q1")
    clock.now += 301
    store.check(T, TIMES, "q2")
    clock.now += 30 * DAY
    assert store.check(T, TIMES, "q3").outcome is Outcome.KNOWN  # refreshed here ...
    clock.now += 30 * DAY
    assert store.check(T, TIMES, "q4").outcome is Outcome.KNOWN  # ... so still known
    clock.now += 35 * DAY + 1
    assert store.check(T, TIMES, "q5").outcome is Outcome.NEW


def test_triplets_differ_by_each_part(store: GreylistDatabase, clock: Clock) -> None:
    store.check(T, TIMES, "q1")
    clock.now += 301
    assert store.check(T, TIMES, "q2").outcome is Outcome.PASSED
    for other in (
        Triplet("198.51.100.0/24", T.sender, T.recipient),
        Triplet(T.network, "", T.recipient),
        Triplet(T.network, T.sender, "c@mx.test"),
    ):
        assert store.check(other, TIMES, "q3").outcome is Outcome.NEW


def test_lazy_purge_at_most_once_an_hour(store: GreylistDatabase, clock: Clock) -> None:
    store.check(T, TIMES, "q1")  # purges (first call), then waits
    clock.now += 2 * DAY - 600
    store.check(Triplet(T.network, "b@x.test", T.recipient), TIMES, "q2")  # purges nothing yet
    clock.now += 1200  # T's window is over, but the last purge was 20 minutes ago
    store.check(Triplet(T.network, "c@x.test", T.recipient), TIMES, "q3")
    assert store.counts() == (3, 0)
    clock.now += PURGE_INTERVAL
    store.check(Triplet(T.network, "d@x.test", T.recipient), TIMES, "q4")
    assert store.counts() == (3, 0)  # T gone, d added


def test_auto_whitelist_after_n_messages(store: GreylistDatabase, clock: Clock) -> None:
    times = GreylistTimes(300, 2 * DAY, 35 * DAY, auto_whitelist=2)
    store.check(T, times, "q1")
    clock.now += 301
    assert store.check(T, times, "q2").outcome is Outcome.PASSED  # message 1
    second = Triplet(T.network, T.sender, "c@mx.test")
    assert store.check(second, times, "q2").outcome is Outcome.NEW  # same message: not counted
    assert store.check(T, times, "q3").outcome is Outcome.KNOWN  # message 2
    stranger = Triplet(T.network, "new@y.test", "d@mx.test")
    assert store.check(stranger, times, "q4").outcome is Outcome.CLIENT
    other_net = Triplet("203.0.113.0/24", "new@y.test", "d@mx.test")
    assert store.check(other_net, times, "q5").outcome is Outcome.NEW
    clock.now += 35 * DAY + 1  # the count expires with the network's last message
    assert store.check(Triplet(T.network, "z@y.test", "d@mx.test"), times, "q6").outcome is (
        Outcome.NEW
    )


def test_database_is_wal_and_survives_reopening(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "g.db"
    first = GreylistStore(path, clock)
    first.check(T, TIMES, "q1")
    first.close()
    clock.now += 301
    assert GreylistStore(path, clock).check(T, TIMES, "q2").outcome is Outcome.PASSED
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("192.0.2.77", "192.0.2.0/24"),
        ("192.0.2.1", "192.0.2.0/24"),
        ("::ffff:192.0.2.9", "192.0.2.0/24"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ],
)
def test_client_network_grouping(address: str, network: str) -> None:
    assert client_network(address, 24, 64) == network


def test_client_network_other_prefixes() -> None:
    assert client_network("192.0.2.77", 32, 64) == "192.0.2.77/32"
    assert client_network("2001:db8:1:2::1", 24, 48) == "2001:db8:1::/48"


def test_recipient_whitelist_forms() -> None:
    entries = ["postmaster@", "abuse", "boss@mx.test", "@vip.test"]
    assert recipient_listed(Address("PostMaster", "any.test"), entries)
    assert recipient_listed(Address("abuse", "mx.test"), entries)
    assert recipient_listed(Address("Boss", "MX.test"), entries)
    assert not recipient_listed(Address("boss", "other.test"), entries)
    assert recipient_listed(Address("anyone", "vip.test"), entries)
    assert not recipient_listed(Address("user", "mx.test"), entries)


def options(**values: Any) -> GreylistOptions:
    validated = registry.validate_options("greylist", values)
    assert isinstance(validated, GreylistOptions)
    return validated


def test_options_defaults_and_durations() -> None:
    got = options(delay="5m", retry_window="2d", expire="35d")
    assert (got.delay, got.retry_window, got.expire) == (300, 2 * DAY, 35 * DAY)
    assert (got.ipv4_prefix, got.ipv6_prefix, got.auto_whitelist) == (24, 64, 5)
    assert got == options()


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"delay": "1h", "retry_window": "30m"}, "retry_window must be longer than delay"),
        ({"whitelist_clients": ["10.0.0.0/33"]}, "options.whitelist_clients"),
        ({"whitelist_recipients": ["a@b@c"]}, "options.whitelist_recipients"),
        ({"ipv4_prefix": 33}, "options.ipv4_prefix"),
        ({"delay": "soon"}, "not a duration"),
        ({"dely": 5}, "options.dely"),
    ],
)
def test_bad_options_are_configuration_errors(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        registry.validate_options("greylist", values)


def session(address: str = "192.0.2.9", **flags: Any) -> SessionInfo:
    return SessionInfo("s1", "smtp-25", "smtp", "127.0.0.1", 25, address, 4000, **flags)


def attempt(
    flt: GreylistFilter, info: SessionInfo, sender: str = "A@X.test", rcpt: str = "b@mx.test"
) -> Reply | None:
    local, _, domain = sender.partition("@")
    txn = Transaction("q1", Address(local, domain) if sender else None, MailParams())
    rlocal, _, rdomain = rcpt.partition("@")
    return asyncio.run(flt.rcpt(info, txn, Recipient(Address(rlocal, rdomain)), []))


def make_filter(tmp_path: Path, clock: Clock, **values: Any) -> GreylistFilter:
    settings = Settings(queue={"directory": str(tmp_path / "queue")})
    return GreylistFilter("greylist", options(**values), settings, clock=clock)


def test_filter_defers_then_accepts_from_the_same_network(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailwright.mail")
    flt = make_filter(tmp_path, clock)
    reply = attempt(flt, session("192.0.2.9"))
    assert reply is not None and reply.code == 451 and reply.status == "4.7.1"
    assert "Greylisted, please try again in 300 seconds" in str(reply)
    clock.now += 100
    reply = attempt(flt, session("192.0.2.200"), sender="a@x.TEST")
    assert reply is not None and "try again in 200 seconds" in str(reply)
    clock.now += 200
    assert attempt(flt, session("192.0.2.10")) is None  # another server of the same /24
    assert "q1: filter=greylist, greylist=passed after 300 s, network=192.0.2.0/24, " in (
        caplog.text
    )
    assert (tmp_path / "queue" / "greylist.db").exists()


def test_filter_greylists_bounces(tmp_path: Path, clock: Clock) -> None:
    flt = make_filter(tmp_path, clock)
    reply = attempt(flt, session(), sender="")
    assert reply is not None and reply.code == 451


@pytest.mark.parametrize(
    "info",
    [
        session("", local_user="root"),
        session(trusted_relay=True),
        session(auth_user="alice"),
        session("10.1.2.3"),
        session("2001:db8::5"),
    ],
)
def test_filter_exempts_trusted_and_whitelisted_clients(
    tmp_path: Path, clock: Clock, info: SessionInfo
) -> None:
    flt = make_filter(tmp_path, clock, whitelist_clients=["10.0.0.0/8", "2001:db8::/32"])
    assert attempt(flt, info) is None
    assert not (tmp_path / "queue" / "greylist.db").exists()  # not even opened


def test_filter_exempts_whitelisted_recipients(tmp_path: Path, clock: Clock) -> None:
    flt = make_filter(tmp_path, clock, whitelist_recipients=["postmaster", "sales@mx.test"])
    assert attempt(flt, session(), rcpt="Postmaster@mx.test") is None
    assert attempt(flt, session(), rcpt="sales@mx.test") is None
    assert attempt(flt, session(), rcpt="abuse@mx.test") is not None  # default list replaced


def test_filter_database_option(tmp_path: Path, clock: Clock) -> None:
    flt = make_filter(tmp_path, clock, database=str(tmp_path / "elsewhere" / "g.db"))
    attempt(flt, session())
    assert (tmp_path / "elsewhere" / "g.db").exists()
