"""The policy state the nodes share on a real PostgreSQL (schema version 3): two stores
on one database, as two nodes have them, see each other's greylist triplets, AUTH
failures and connection rate events, dead hosts and MTA-STS policies; a database that
cannot be reached fails fast, and each kind of state fails the way docs/cluster.md says."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mailwright.config.schema import AuthSection
from mailwright.core.reply import Reply
from mailwright.policy.greylist_store import GreylistTimes, Outcome, Triplet
from mailwright.policy.hooks import SessionInfo
from mailwright.policy.limits import AuthThrottle, ConnectionRateLimit
from mailwright.queue.store import StoreError
from mailwright.routing.mtasts import SavedPolicy, StsMode, StsPolicy
from tests.support.milters import free_port
from tests.support.postgres import sql_rows, sql_run, state_database

pytest.importorskip("psycopg")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def info(ip: str) -> SessionInfo:
    return SessionInfo("1", "smtp-25", "smtp", "127.0.0.1", 25, ip, 1)


def test_a_version_2_database_gets_the_state_tables(postgres_database: str) -> None:
    from mailwright.queue import postgres_schema

    state_database(postgres_database).close()
    sql_run(postgres_database, "DROP TABLE greylist_triplets, greylist_clients, host_status,"
            " mta_sts_policies, limit_events, tlsrpt_counts, tlsrpt_runs,"
            " dmarc_results, dmarc_report_runs, tlsrpt_posts")  # fmt: skip
    sql_run(postgres_database, "ALTER TABLE messages DROP COLUMN requiretls")  # version 6's
    sql_run(postgres_database, "UPDATE mailwright_schema SET version = 2")
    state_database(postgres_database).close()  # migrates, as a daemon at start
    version = sql_rows(postgres_database, "SELECT version FROM mailwright_schema")
    assert version == [(postgres_schema.SCHEMA_VERSION,)] == [(8,)]
    assert sql_rows(postgres_database, "SELECT count(*) FROM limit_events") == [(0,)]


def test_a_greylisted_client_retrying_through_another_node_passes(
    postgres_database: str,
) -> None:
    from mailwright.policy.greylist_postgres import PostgresGreylistStore

    clock = Clock()
    times = GreylistTimes(delay=300, retry_window=86400, expire=35 * 86400)
    triplet = Triplet("192.0.2.0/24", "a@x.test", "b@mx.test")
    node_a = PostgresGreylistStore(state_database(postgres_database), clock)
    node_b = PostgresGreylistStore(state_database(postgres_database), clock)
    assert node_a.check(triplet, times, "q1").outcome is Outcome.NEW
    clock.now += 60
    assert node_b.check(triplet, times, "q2").outcome is Outcome.EARLY  # B knows A's triplet
    clock.now += 300
    assert node_b.check(triplet, times, "q3").outcome is Outcome.PASSED
    assert node_a.check(triplet, times, "q4").outcome is Outcome.KNOWN
    assert node_a.counts() == node_b.counts() == (1, 1)


def test_auth_failures_and_connection_rate_count_across_nodes(postgres_database: str) -> None:
    from mailwright.policy.limits_postgres import PostgresLimits

    clock = Clock()
    node_a = PostgresLimits(state_database(postgres_database), clock)
    node_b = PostgresLimits(state_database(postgres_database), clock)
    section = AuthSection(max_failures_per_ip=4, max_failures_per_user=3, failure_delay=0)
    on_a, on_b = AuthThrottle(section, cluster=node_a), AuthThrottle(section, cluster=node_b)
    rate_a = ConnectionRateLimit(3, "mx.test", cluster=node_a)
    rate_b = ConnectionRateLimit(3, "mx.test", cluster=node_b)
    ip = "192.0.2.1"

    async def main() -> None:
        for _ in range(3):
            await on_a.failed(ip, "alice")
        assert await on_b.user_blocked("alice", ip)  # moved to node B: still counted
        assert not await on_b.ip_blocked(ip)
        await on_b.failed(ip, "bob")
        assert await on_a.ip_blocked(ip)  # 3 on A + 1 on B
        await on_b.succeeded("alice", ip)
        assert not await on_a.user_blocked("alice", ip) and await on_a.ip_blocked(ip)
        clock.now += section.failure_window + 1
        assert not await on_a.ip_blocked(ip)  # the window is over, on every node
        assert [await rate_a.connect(info(ip)) for _ in range(2)] == [None, None]
        assert await rate_b.connect(info(ip)) is None  # the third this minute
        reply = await rate_b.connect(info(ip))
        assert reply is not None and reply.code == 421
        assert await rate_a.connect(info("192.0.2.2")) is None

    asyncio.run(main())
    # nothing but hashes: no address, no user name is stored
    keys = sql_rows(postgres_database, "SELECT DISTINCT length(key) FROM limit_events")
    assert keys == [(16,)]


def test_a_dead_host_found_by_one_node_is_skipped_by_the_other(postgres_database: str) -> None:
    from mailwright.manager.hoststatus import SharedHostStatus
    from mailwright.manager.hoststatus_postgres import PostgresHostStatusTable

    reply = Reply.of(451, "4.4.1", "connection refused by mx.b.test")

    def node() -> SharedHostStatus:
        table = PostgresHostStatusTable(state_database(postgres_database))
        return SharedHostStatus(table, ttl=300, refresh=0)

    async def seen(hosts: SharedHostStatus, key: str) -> Any:
        hosts.dead(key, time.time())  # starts a read of the shared entries
        await hosts.settle()
        return hosts.dead(key, time.time())

    async def main() -> None:
        node_a, node_b = node(), node()
        assert await seen(node_b, "smtp:b.test") is None
        node_a.mark_dead("smtp:b.test", reply, "mx.b.test", time.time())
        await node_a.settle()
        dead = await seen(node_b, "smtp:b.test")
        assert dead is not None and dead.reply == reply and dead.remote_mta == "mx.b.test"
        assert 290 < dead.until - time.time() <= 300
        node_b.mark_alive("smtp:b.test")  # B got through: A tries again too
        await node_b.settle()
        assert await seen(node_a, "smtp:b.test") is None
        node_a.mark_dead("smtp:c.test", reply, "mx.c.test", time.time())
        await node_a.settle()
        node_b.clear()  # a flush on B
        await node_b.settle()
        assert await seen(node_a, "smtp:c.test") is None

    asyncio.run(main())


def test_an_mta_sts_policy_saved_by_one_node_is_loaded_by_the_other(
    postgres_database: str,
) -> None:
    from mailwright.routing.mtasts_store import PostgresPolicyStore

    node_a = PostgresPolicyStore(state_database(postgres_database))
    node_b = PostgresPolicyStore(state_database(postgres_database))
    policy = StsPolicy(StsMode.ENFORCE, ("mx.b.test", "*.b.test"), 86400)
    assert node_b.load("b.test") is None
    node_a.save("b.test", SavedPolicy(policy, "20260101", time.time() + 86400))
    saved = node_b.load("b.test")
    assert saved is not None and (saved.policy, saved.policy_id) == (policy, "20260101")


def test_tls_report_counts_of_two_nodes_add_up_and_one_node_sends(
    postgres_database: str,
) -> None:
    from mailwright.routing.tlsrpt import ReportedPolicy, Result, TlsRecorder
    from mailwright.routing.tlsrpt_store import PostgresReportStore

    node_a = PostgresReportStore(state_database(postgres_database))
    node_b = PostgresReportStore(state_database(postgres_database))
    recorder = TlsRecorder(clock=lambda: 1772366400.0)  # 2026-03-01T12:00:00Z
    policy = ReportedPolicy.sts("b.test", StsPolicy(StsMode.ENFORCE, ("mx.b.test",), 86400))
    recorder.record(policy, Result.SUCCESS)
    recorder.record(policy, Result.CERTIFICATE_EXPIRED, sending_ip="192.0.2.1",
                    receiving_mx="mx.b.test", receiving_ip="192.0.2.2")  # fmt: skip
    counts = recorder.take()
    node_a.add(counts)
    node_b.add(counts)
    assert node_b.days() == ["2026-03-01"]
    assert node_a.counts("2026-03-01") == {tally: 2 * n for tally, n in counts.items()}
    assert node_a.claim("2026-03-01", "a", 1000.0, 60)
    assert not node_b.claim("2026-03-01", "b", 1030.0, 60)
    node_a.finish("2026-03-01", "a", 1040.0)
    assert node_b.days() == [] and node_b.counts("2026-03-01") == {}
    assert not node_b.claim("2026-03-01", "b", 99_999.0, 60)


def test_tls_report_counters_keep_the_latest_helo_and_reason(postgres_database: str) -> None:
    from mailwright.routing.tlsrpt import ReportedPolicy, Result, Tally, TlsRecorder
    from mailwright.routing.tlsrpt_store import PostgresReportStore

    node_a = PostgresReportStore(state_database(postgres_database))
    node_b = PostgresReportStore(state_database(postgres_database))
    recorder = TlsRecorder(clock=lambda: 1772366400.0)  # 2026-03-01T12:00:00Z
    policy = ReportedPolicy.sts("b.test", StsPolicy(StsMode.ENFORCE, ("mx.b.test",), 86400))

    def flush(node: Any, helo: str, reason: str) -> None:
        recorder.record(policy, Result.CERTIFICATE_EXPIRED, sending_ip="192.0.2.1",
                        receiving_mx="mx.b.test", receiving_ip="192.0.2.2",
                        receiving_helo=helo, reason=reason)  # fmt: skip
        node.add(recorder.take())

    def stored() -> dict[Any, int]:
        counts: dict[Any, int] = node_b.counts("2026-03-01")
        return counts

    flush(node_a, "MX1.b.test.", "certificate has expired")
    expired = Tally("2026-03-01", policy, Result.CERTIFICATE_EXPIRED, "192.0.2.1", "mx.b.test",
                    "192.0.2.2", "mx1.b.test", "certificate has expired")  # fmt: skip
    assert stored() == {expired: 1}
    flush(node_b, "", "")  # another node, nothing to say: what is stored stays
    assert stored() == {expired: 2}
    flush(node_b, "", "certificate has expired (again)")
    flush(node_a, "mx2.b.test", "")
    assert stored() == {
        Tally("2026-03-01", policy, Result.CERTIFICATE_EXPIRED, "192.0.2.1", "mx.b.test",
              "192.0.2.2", "mx2.b.test", "certificate has expired (again)"): 4
    }  # fmt: skip


# the upsert of a node of schema version 7 (routing.tlsrpt_store before version 8)
V7_ADD = (
    "INSERT INTO tlsrpt_counts (day, domain, policy_type, policy_strings, mx_hosts, result,"
    " sending_ip, receiving_mx, receiving_ip, count) VALUES ('2026-03-01', 'c.test',"
    " 'no-policy-found', '[]', '[]', 'starttls-not-supported', '192.0.2.1', 'mx.c.test',"
    " '192.0.2.3', 5) ON CONFLICT (day, domain, policy_type, policy_strings, mx_hosts, result,"
    " sending_ip, receiving_mx, receiving_ip) DO UPDATE SET"
    " count = tlsrpt_counts.count + excluded.count"
)


def test_a_version_7_database_gets_the_columns_and_version_7_nodes_go_on(
    postgres_database: str,
) -> None:
    from mailwright.queue import postgres_schema
    from mailwright.routing.tlsrpt import ReportedPolicy, Result, TlsRecorder
    from mailwright.routing.tlsrpt_store import PostgresReportStore

    state_database(postgres_database).close()
    sql_run(postgres_database, "ALTER TABLE tlsrpt_counts DROP COLUMN receiving_helo,"
            " DROP COLUMN failure_reason")  # fmt: skip
    sql_run(postgres_database, "UPDATE mailwright_schema SET version = 7")
    sql_run(postgres_database, V7_ADD)  # a count of the old version
    store = PostgresReportStore(state_database(postgres_database))  # migrates, as at start
    version = sql_rows(postgres_database, "SELECT version FROM mailwright_schema")
    assert version == [(postgres_schema.SCHEMA_VERSION,)] == [(8,)]
    columns = sql_rows(
        postgres_database,
        "SELECT column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_name = 'tlsrpt_counts'"
        " AND column_name IN ('receiving_helo', 'failure_reason') ORDER BY column_name",
    )
    assert columns == [
        ("failure_reason", "text", "NO", "''::text"),
        ("receiving_helo", "text", "NO", "''::text"),
    ]
    key = sql_rows(
        postgres_database,
        "SELECT count(*) FROM information_schema.key_column_usage"
        " WHERE table_name = 'tlsrpt_counts'",
    )
    assert key == [(9,)]  # the key of version 4, unchanged
    [(old, count)] = store.counts("2026-03-01").items()
    assert (old.result, old.receiving_helo, old.reason, count) == (
        Result.STARTTLS_NOT_SUPPORTED, "", "", 5
    )  # fmt: skip
    recorder = TlsRecorder(clock=lambda: 1772366400.0)
    recorder.record(ReportedPolicy.none("c.test"), Result.STARTTLS_NOT_SUPPORTED,
                    sending_ip="192.0.2.1", receiving_mx="mx.c.test", receiving_ip="192.0.2.3",
                    receiving_helo="mx.c.test", reason="STARTTLS not offered")  # fmt: skip
    store.add(recorder.take())
    sql_run(postgres_database, V7_ADD)  # a node not upgraded yet, during the rolling upgrade
    [(tally, count)] = store.counts("2026-03-01").items()
    assert (tally.receiving_helo, tally.reason, count) == ("mx.c.test", "STARTTLS not offered", 11)


def test_a_failed_post_is_taken_by_one_node_at_a_time(postgres_database: str) -> None:
    from mailwright.routing.tlsrpt_store import PendingPost, PostgresReportStore

    node_a = PostgresReportStore(state_database(postgres_database))
    node_b = PostgresReportStore(state_database(postgres_database))
    post = PendingPost("https://r.b.test/x", "b.test", "2026-03-01", b"\x1f\x8b gz", 10.0, 70.0, 1)
    node_a.retry_later(post)
    assert node_b.take_due(60.0, 900.0, 10) == []  # not yet due
    [taken] = node_a.take_due(70.0, 900.0, 10)
    assert taken == PendingPost(post.url, post.domain, post.day, post.data, 10.0, 970.0, 1)
    assert node_b.take_due(100.0, 900.0, 10) == []  # a's for the lease
    node_a.retry_later(PendingPost(post.url, post.domain, post.day, post.data, 10.0, 200.0, 2))
    [again] = node_b.take_due(200.0, 900.0, 10)
    assert again.attempts == 2
    node_b.forget(again)
    assert node_a.take_due(10_000.0, 900.0, 1) == []
    for n in range(3):
        node_a.retry_later(PendingPost(f"https://r{n}.test/", "b.test", "d", b"z", 0.0, 9.0 - n, 1))
    assert sorted(p.url for p in node_b.take_due(20.0, 900.0, 2)) == [
        "https://r1.test/",
        "https://r2.test/",
    ]  # the oldest due first, no more than asked


def test_an_unreachable_database_fails_fast_and_each_kind_as_documented() -> None:
    from mailwright.policy.greylist_postgres import PostgresGreylistStore
    from mailwright.policy.limits_postgres import PostgresLimits
    from mailwright.queue.postgres_state import StateDatabase

    database = StateDatabase(f"postgresql://postgres@127.0.0.1:{free_port()}/none", timeout=1)
    times = GreylistTimes(delay=300, retry_window=86400, expire=86400)
    with pytest.raises(StoreError):  # the filter's on_failure answers: 451 by default
        PostgresGreylistStore(database).check(Triplet("192.0.2.0/24", "", "b@x"), times, "q")
    started = time.monotonic()
    with pytest.raises(StoreError, match="unavailable"):  # paused: no new attempt
        database.run(lambda conn: None)
    assert time.monotonic() - started < 0.5
    limits = PostgresLimits(database)
    throttle = AuthThrottle(AuthSection(failure_delay=0), cluster=limits)
    rate = ConnectionRateLimit(3, "mx.test", cluster=limits)

    async def main() -> None:
        assert await rate.connect(info("192.0.2.1")) is None  # not enforced meanwhile
        with pytest.raises(StoreError):  # the session answers 454 4.7.0
            await throttle.ip_blocked("192.0.2.1")
        assert await throttle.failed("192.0.2.1", "alice") == 0.0  # logged, not raised
        await throttle.succeeded("alice", "192.0.2.1")

    asyncio.run(main())
