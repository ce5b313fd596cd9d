"""Issue 15: the daemon and the command line on a PostgreSQL queue (``queue.backend``).

A real PostgreSQL (tests/support/postgres.py), real daemons of two workers, real clients
(smtplib, ``mailwright queue``, ``mailq``) and a real next hop (Postfix's smtp-sink): mail
accepted goes into the database, every tool lists it, a flush relays each message once.
The configuration is checked at load (a missing connection string is an error naming
the key), a password file is used and never shown, and a database that goes away while
the daemon runs costs clients a 451 until it is back, not the daemon.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import smtp_sink
from tests.support.cluster import data_reply, listed_ids, on_postgres, send
from tests.support.daemon import Mailwright, free_port, wait_until
from tests.support.peers import peer
from tests.support.postgres import PostgresServer, PrivatePostgres
from tests.support.sendmail import Tools, short_tmp


@peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
def test_two_workers_on_postgresql_queue_list_and_relay_each_message_once(
    postgres_database: str,
) -> None:
    with short_tmp() as root:
        sink = smtp_sink.SmtpSink(root / "sink").start()
        try:
            table = root / "transport"
            table.write_text(f"* smtp:[127.0.0.1]:{sink.port}\n")
            config = {
                **on_postgres(postgres_database),
                "routing": {"transport_table": str(table)},
                "delivery": {"mode": "queue", "idle_connection_timeout": 0.5},
            }
            mw = Mailwright(root / "mw", config).start()
            try:
                ids = [send(mw.port, n) for n in range(12)]
                assert listed_ids(mw) == set(ids)
                mailq = Tools(mw, root / "bin").run(program="mailq")
                assert mailq.returncode == 0, mailq.stderr.decode()
                assert all(i in mailq.stdout.decode() for i in ids)
                assert not (root / "mw" / "queue" / "queue.db").exists()  # not the file
                flushed = mw.cli("queue", "flush")
                assert flushed.returncode == 0, flushed.stderr.decode()
                wait_until(lambda: not listed_ids(mw), 60, "an empty queue")
                assert len([line for line in mw.log if "stat=Sent" in line]) == 12
            finally:
                assert mw.stop() == 0
            wait_until(lambda: len(sink.messages()) >= 12, 30, "the sink to have all")
            subjects = sorted(
                re.search(rb"Subject: number (\d+)", m.content)[1]  # type: ignore[index]
                for m in sink.messages()
            )
            assert subjects == sorted(str(n).encode() for n in range(12)), "lost or doubled"
        finally:
            sink.stop()


def test_postgresql_backend_without_a_connection_string_is_a_config_error(
    tmp_path: Path,
) -> None:
    mw = Mailwright(tmp_path, {"queue": {"backend": "postgresql"}})
    mw.write_config()
    checked = mw.cli("config", "check")
    assert checked.returncode != 0
    error = checked.stderr.decode()
    assert "queue" in error and "postgresql" in error and "connection" in error, error
    served = mw.cli("serve", timeout=30)
    assert served.returncode != 0
    assert "postgresql" in served.stderr.decode()


def test_a_daemon_refuses_a_database_of_a_newer_schema(
    tmp_path: Path, postgres_database: str
) -> None:
    """Two versions on one database: the older program neither starts nor writes."""
    import psycopg

    mw = Mailwright(tmp_path / "mw", on_postgres(postgres_database))
    mw.write_config()
    migrated = mw.cli("queue", "migrate")
    assert migrated.returncode == 0, migrated.stderr.decode()
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute("UPDATE mailwright_schema SET version = version + 1")
    with pytest.raises(RuntimeError, match="newer than this program's"):
        mw.start()
    assert any("upgrade Mailwright on this node" in line for line in mw.log)
    with psycopg.connect(postgres_database) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)


@pytest.fixture
def password_role(postgres_server: PostgresServer, postgres_database: str) -> Iterator[str]:
    """A role that must give its password (scram), owning the test's database; its name."""
    import psycopg

    name, password = "mwpass", "Secret-0f-the-queue"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        hba = Path(str(conn.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]
        rule = f"host all {name} 127.0.0.1/32 scram-sha-256\n"
        if rule not in hba.read_text():  # first match wins: before the "trust" lines
            hba.write_text(rule + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        conn.execute(f"DROP ROLE IF EXISTS {name}")  # type: ignore[arg-type]
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")  # type: ignore[arg-type]
        dbname = postgres_database.rsplit("/", 1)[1]
        conn.execute(f'ALTER DATABASE "{dbname}" OWNER TO {name}')  # type: ignore[arg-type]
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute(f"ALTER SCHEMA public OWNER TO {name}")  # type: ignore[arg-type]
    yield password


def test_the_password_file_logs_in_and_the_password_is_never_shown(
    tmp_path: Path, postgres_database: str, password_role: str
) -> None:
    url = postgres_database.replace("postgresql://postgres@", "postgresql://mwpass@")
    secret = tmp_path / "pgpass"
    secret.write_text("wrong\n")
    mw = Mailwright(tmp_path / "mw", on_postgres(url, postgresql_password_file=str(secret)))
    with pytest.raises(RuntimeError, match="password authentication failed"):
        mw.start()  # the file is what logs in: a wrong one is refused
    secret.write_text(password_role + "\n")
    mw.start()
    try:
        queue_id = send(mw.port, 1)
        assert listed_ids(mw) == {queue_id}
        shown = mw.cli("config", "show")
        assert shown.returncode == 0 and b"pgpass" in shown.stdout
        # a password written into the connection string is masked too
        mw.config["queue"]["postgresql"] = url.replace("mwpass@", f"mwpass:{password_role}@")
        mw.write_config()
        for args in (("config", "show"), ("config", "show", "--json"), ("config", "check")):
            out = mw.cli(*args)
            assert out.returncode == 0, out.stderr.decode()
            assert password_role.encode() not in out.stdout + out.stderr, args
        assert b"mwpass:********@" in mw.cli("config", "show").stdout
    finally:
        mw.stop()
    assert not any(password_role in line for line in mw.log)


def test_a_lost_database_answers_451_until_it_is_back(tmp_path: Path) -> None:
    pg_root = Path(tempfile.mkdtemp(prefix="mailwright-pg-"))  # pytest's tmp is closed to others
    server = PrivatePostgres(pg_root).start()
    try:
        # queue-only mode, a queue run every 0.3 s: the runs go on across the outage (to
        # a next hop that is down: the messages stay queued)
        table = tmp_path / "transport"
        table.write_text(f"* smtp:[127.0.0.1]:{free_port()}\n")
        config = {
            **on_postgres(server.url()),
            "routing": {"transport_table": str(table)},
            "delivery": {"queue_run_interval": 0.3},
        }
        mw = Mailwright(tmp_path / "mw", config).start()
        try:
            first = send(mw.port, 1)
            server.stop()
            code, text = data_reply(mw.port)
            assert (code, text[:5]) == (451, b"4.3.0"), text
            code, _ = data_reply(mw.port)  # and again: the daemon still serves
            assert code == 451
            mw.wait_log("queue run (full) failed")  # the runs fail ...
            server.start()
            second = send(mw.port, 2)  # no restart of the daemon
            assert listed_ids(mw) == {first, second}
            done = sum("queue run (full) done" in line for line in mw.log)
            mw.wait_log("queue run (full) done", occurrence=done + 2)  # ... and go on
        finally:
            assert mw.stop() == 0
    finally:
        server.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
