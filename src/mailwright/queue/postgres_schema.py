"""The PostgreSQL queue store's schema, its migrations, session set-up and error mapping.

The tables are those of the SQLite store (``messages``, ``recipients``, ``headers``,
``body_chunks``: the body in ``bytea`` rows of ~1 MiB) with PostgreSQL types: times are
``double precision`` seconds since the epoch, as the ``QueueStore`` interface has them,
and deleting a message cascades to its rows. The schema version is the one row of
``mailwright_schema``; ``migrate`` creates the schema in an empty database and applies
newer versions one at a time, all in one transaction under an advisory lock, so nodes
starting together migrate once. A database whose version is newer than this program's is
refused with a ``StoreError`` naming both versions: an older node never writes a schema
it does not know.

``claim_id_slot`` takes one of ``ID_SLOTS`` queue id slots with a session advisory lock:
each process that writes the database holds one, so queue ids are unique across nodes
by construction (``core.queueid``). ``configure_session`` makes sure commits are
durable: ``synchronous_commit`` may be ``on``, ``remote_write``, ``remote_apply`` or
``local`` (the server's setting is kept), never ``off`` (it is turned ``on`` for the
session). The error helpers map psycopg errors
to ``StoreError`` and ``StoreFullError``.

Trusts: the database named by the connection string (the operator's). Settings read:
none (``postgres`` is given the connection string).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors

from mailwright.queue.store import NewerSchemaError, StoreError, batch_failure, failure

SCHEMA_VERSION = 8
Conn = psycopg.Connection[dict[str, Any]]  # autocommit, rows as dicts (dict_row)
DEFAULT_BODY_CHUNK = 1 << 20
# pg_advisory_xact_lock key of schema migrations ("mailwrig" in ASCII)
_MIGRATION_LOCK = 0x6D61696C77726967
# queue id slots: session advisory locks (ID_SLOT_LOCK, slot); the two-key space does not
# overlap the one-key space of _MIGRATION_LOCK. 1024 slots leave each writing process
# 32768 ids per millisecond (core.queueid).
ID_SLOT_LOCK = 0x6D776964  # "mwid"
ID_SLOTS = 1024

_SCHEMA_V1 = [
    """CREATE TABLE messages (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        queue_id text NOT NULL UNIQUE,
        sender_local text,              -- NULL (with sender_domain): the null path <>
        sender_domain text,
        mail_size bigint,               -- SIZE= as the client declared it
        body_type text NOT NULL,
        smtputf8 integer NOT NULL,
        ret text,
        envid text,
        auth text,
        received_at double precision NOT NULL,
        size bigint NOT NULL,           -- header section + separator + body
        body_size bigint NOT NULL,
        state text NOT NULL,
        hold_reason text,
        protocol text NOT NULL,
        client_address text NOT NULL,
        client_name text NOT NULL,
        helo text NOT NULL,
        auth_user text NOT NULL,
        local_user text NOT NULL,
        message_id_header text,
        subject text,
        warned integer NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX messages_received ON messages (received_at, id)",
    """CREATE TABLE recipients (
        message_id bigint NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        idx integer NOT NULL,
        local text NOT NULL,
        domain text NOT NULL,
        orcpt text,
        notify text,
        state text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt double precision NOT NULL,
        last_attempt double precision,
        last_status text,
        last_reply text,
        remote_mta text,
        lease_owner text,
        lease_until double precision,
        mailer text,                    -- core.target.Mailer; NULL: an address
        target text,
        ctl_user text,
        PRIMARY KEY (message_id, idx)
    )""",
    # only queued recipients are work: the index of due work holds nothing else
    "CREATE INDEX recipients_due ON recipients (next_attempt) WHERE state = 'queued'",
    "CREATE INDEX recipients_lease ON recipients (lease_owner) WHERE lease_owner IS NOT NULL",
    """CREATE TABLE headers (
        message_id bigint PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        data bytea NOT NULL
    )""",
    """CREATE TABLE body_chunks (
        message_id bigint NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (message_id, seq)
    )""",
]

# version 2: the cluster's nodes (``queue.postgres_nodes``). Times are the database
# server's clock (``now()``), so hosts with skewed clocks still agree on a heartbeat's age
_SCHEMA_V2_NODES = [
    """CREATE TABLE nodes (
        node text PRIMARY KEY,          -- [cluster] node
        host text NOT NULL,
        pid integer NOT NULL,           -- the supervisor's (or the only process's)
        version text NOT NULL,
        started_at double precision NOT NULL,
        last_beat double precision NOT NULL,
        heartbeat double precision NOT NULL,    -- its interval: stale after three
        workers integer NOT NULL,
        listeners text NOT NULL,
        stopped_at double precision             -- NULL while it runs
    )""",
    # the processes of each node, by the ``host:pid:start`` part of their lease owners
    """CREATE TABLE node_processes (
        process text PRIMARY KEY,
        node text NOT NULL
    )""",
]

# version 3: the policy state the nodes share (``queue.postgres_state``, docs/cluster.md).
# Times are seconds since the epoch on the database server's clock. ``limit_events`` is
# UNLOGGED: counters are cheap to lose (a crash of the server, a failover empties them) and
# cost no WAL on the per-connection path
_SCHEMA_V3_STATE = [
    """CREATE TABLE greylist_triplets (
        network text NOT NULL,
        sender text NOT NULL,
        recipient text NOT NULL,
        first_seen double precision NOT NULL,
        passed_at double precision,
        last_seen double precision NOT NULL,
        PRIMARY KEY (network, sender, recipient)
    )""",
    """CREATE TABLE greylist_clients (
        network text PRIMARY KEY,
        passed integer NOT NULL,
        last_seen double precision NOT NULL,
        last_message text NOT NULL
    )""",
    """CREATE TABLE host_status (
        key text PRIMARY KEY,           -- routing.nexthop.NextHop.key
        reply text NOT NULL,            -- the failure, as the SMTP reply
        remote_mta text NOT NULL,
        until double precision NOT NULL
    )""",
    """CREATE TABLE mta_sts_policies (
        domain text PRIMARY KEY,
        policy_id text NOT NULL,
        mode text NOT NULL,
        mx text NOT NULL,               -- the patterns, one per line
        max_age integer NOT NULL,
        expires double precision NOT NULL
    )""",
    """CREATE UNLOGGED TABLE limit_events (
        kind text NOT NULL,             -- connection_rate, auth_ip, auth_user_ip, auth_user
        key bytea NOT NULL,             -- sha256 of the address or user name
        at double precision NOT NULL
    )""",
    "CREATE INDEX limit_events_key ON limit_events (kind, key, at)",
]

# version 4: SMTP TLS reporting (RFC 8460, ``routing.tlsrpt_store``): session counts per
# day and policy until the day's report is sent, and which node sends it (a lease)
_SCHEMA_V4_TLSRPT = [
    """CREATE TABLE tlsrpt_counts (
        day text NOT NULL,              -- YYYY-MM-DD, UTC
        domain text NOT NULL,           -- the policy domain
        policy_type text NOT NULL,      -- sts, tlsa, no-policy-found
        policy_strings text NOT NULL,   -- JSON list
        mx_hosts text NOT NULL,         -- JSON list
        result text NOT NULL,           -- success or an RFC 8460 result type
        sending_ip text NOT NULL,
        receiving_mx text NOT NULL,
        receiving_ip text NOT NULL,
        count bigint NOT NULL,
        PRIMARY KEY (day, domain, policy_type, policy_strings, mx_hosts, result,
                     sending_ip, receiving_mx, receiving_ip)
    )""",
    """CREATE TABLE tlsrpt_runs (
        day text PRIMARY KEY,
        owner text NOT NULL,            -- queue.lease owner of the process sending
        lease_until double precision NOT NULL,
        done double precision           -- when the day's reports were sent
    )""",
]

# version 5: DMARC results waiting for the aggregate reports, and which periods a node
# reported (``policy.dmarc_store``)
_SCHEMA_V5_DMARC = [
    """CREATE TABLE dmarc_results (
        at double precision NOT NULL,
        policy_domain text NOT NULL,
        header_from text NOT NULL,
        source_ip text NOT NULL,
        envelope_from text NOT NULL,
        disposition text NOT NULL,
        dkim text NOT NULL,
        spf text NOT NULL,
        reasons text NOT NULL,
        auth text NOT NULL,             -- JSON: the DKIM and SPF results
        policy text NOT NULL            -- JSON: the record published
    )""",
    "CREATE INDEX dmarc_results_at ON dmarc_results (at)",
    """CREATE TABLE dmarc_report_runs (
        period_end double precision PRIMARY KEY,
        sender text NOT NULL,
        at double precision NOT NULL
    )""",
]

# version 6: the REQUIRETLS parameter of MAIL FROM (RFC 8689), 1 when the client gave it.
# Additive: a constant default rewrites no row (PostgreSQL 11 and later), and messages
# queued before it are 0, as they were received without it
_SCHEMA_V6_REQUIRETLS = [
    "ALTER TABLE messages ADD COLUMN requiretls integer NOT NULL DEFAULT 0",
]

# version 7: TLS reports whose POST failed, until they go or a day has passed (RFC 8460
# 5.4, ``routing.tlsrpt_store``)
_SCHEMA_V7_TLSRPT_POSTS = [
    """CREATE TABLE tlsrpt_posts (
        url text NOT NULL,
        domain text NOT NULL,
        day text NOT NULL,
        data bytea NOT NULL,            -- the gzip JSON report
        first_attempt double precision NOT NULL,
        next_attempt double precision NOT NULL,
        attempts integer NOT NULL,
        PRIMARY KEY (url, domain, day)
    )""",
]

# version 8: the receiving MX host's EHLO name and the failure's reason of RFC 8460 4.4
# (receiving-mx-helo, failure-reason-code), not part of the key: a row keeps the latest
# non-empty value of each (``routing.tlsrpt_store``). Additive: nodes of version 7 go on
# upserting the counts as before, and the columns default to ''
_SCHEMA_V8_TLSRPT_DETAILS = [
    "ALTER TABLE tlsrpt_counts ADD COLUMN IF NOT EXISTS receiving_helo text NOT NULL DEFAULT ''",
    "ALTER TABLE tlsrpt_counts ADD COLUMN IF NOT EXISTS failure_reason text NOT NULL DEFAULT ''",
]

MIGRATIONS: dict[int, list[str]] = {  # version: DDL
    1: _SCHEMA_V1,
    2: _SCHEMA_V2_NODES,
    3: _SCHEMA_V3_STATE,
    4: _SCHEMA_V4_TLSRPT,
    5: _SCHEMA_V5_DMARC,
    6: _SCHEMA_V6_REQUIRETLS,
    7: _SCHEMA_V7_TLSRPT_POSTS,
    8: _SCHEMA_V8_TLSRPT_DETAILS,
}


def configure_session(conn: Conn) -> None:
    """Durable commits whatever the server's default (see the module docstring)."""
    row = conn.execute("SELECT current_setting('synchronous_commit') AS mode").fetchone()
    if row is None or str(row["mode"]).lower() == "off":
        conn.execute("SET synchronous_commit TO on")


def schema_version(conn: Conn) -> int:
    """The database's schema version; 0 for an empty database."""
    row = conn.execute("SELECT to_regclass('mailwright_schema') IS NOT NULL AS here").fetchone()
    if row is None or not row["here"]:
        return 0
    version = conn.execute("SELECT version FROM mailwright_schema").fetchone()
    return 0 if version is None else int(version["version"])


def check_version(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"queue store {where} has schema version {version}, newer than this program's "
            f"{SCHEMA_VERSION}: upgrade Mailwright on this node"
        )


def migrate(conn: Conn, where: str) -> int:
    """Create or migrate the schema in one transaction (``conn`` is in autocommit mode);
    the version found before."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        version = schema_version(conn)
        check_version(version, where)
        if version == 0:
            conn.execute("CREATE TABLE mailwright_schema (version integer NOT NULL)")
            conn.execute("INSERT INTO mailwright_schema (version) VALUES (0)")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(statement)
            conn.execute("UPDATE mailwright_schema SET version = %s", (target,))
    return version


def claim_id_slot(conn: Conn, first: int) -> int:
    """Lock a queue id slot for this session (released when the session ends, however it
    ends); tries from ``first`` on, so that starting processes rarely probe the same."""
    for step in range(ID_SLOTS):
        slot = (first + step) % ID_SLOTS
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s) AS mine", (ID_SLOT_LOCK, slot)
        ).fetchone()
        if row is not None and row["mine"]:
            return slot
    raise StoreError(f"all {ID_SLOTS} queue id slots are taken: too many writing processes")


# ---- errors ----------------------------------------------------------------------------------


def connection_lost(exc: BaseException, conn: Conn | None) -> bool:
    """Whether ``exc`` left no usable session: the batch fails as a whole."""
    if conn is not None and (conn.broken or conn.closed):
        return True
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def translate_error(exc: Exception) -> Exception:
    """A failure as callers see it: database errors become StoreError."""
    full = isinstance(exc, errors.DiskFull)
    return failure(exc, full=full, database=isinstance(exc, psycopg.Error | OSError))


def store_error(exc: Exception) -> StoreError:
    """A failure of the whole batch (or of a read), always a StoreError."""
    return batch_failure(translate_error(exc), exc)
