"""``mailwright queue migrate`` on SQLite and on a real PostgreSQL (click, in process).

``--check`` exits 1 while migrations are pending and changes nothing; ``migrate`` says
from which version to which and then ``--check`` exits 0; a store of a newer schema is
refused (exit 78) by ``migrate``, ``--check`` and ``queue list``, and is left as it was.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
from click.testing import CliRunner

from mailwright.cli.main import cli
from mailwright.core.sysexits import ExitCode
from mailwright.queue import postgres_schema, sqlite_schema
from mailwright.queue.sqlite import _SCHEMA_V1


def config(tmp_path: Path, queue: str = "") -> Path:
    path = tmp_path / "mailwright.toml"
    path.write_text(f'hostname = "mx.test"\n[queue]\ndirectory = "q"\n{queue}')
    (tmp_path / "q").mkdir(exist_ok=True)
    return path


def run(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(path), "queue", *args])
    return result.exit_code, result.stdout + result.stderr


def sqlite_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def version_1_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_sqlite_check_then_migrate_from_version_1(tmp_path: Path) -> None:
    path = config(tmp_path)
    database = tmp_path / "q" / "queue.db"
    version_1_file(database)
    code, out = run(path, "migrate", "--check")
    assert code == 1, out
    assert f"schema version 1, this program's {sqlite_schema.SCHEMA_VERSION}" in out
    assert sqlite_version(database) == 1  # --check changed nothing
    code, out = run(path, "migrate")
    assert code == 0, out
    assert f"migrated from schema version 1 to {sqlite_schema.SCHEMA_VERSION}" in out
    assert sqlite_version(database) == sqlite_schema.SCHEMA_VERSION
    code, out = run(path, "migrate", "--check")
    assert code == 0, out
    assert "up to date" in out


def test_sqlite_without_a_queue_file_creates_nothing(tmp_path: Path) -> None:
    path = config(tmp_path)
    for args in (("migrate", "--check"), ("migrate",)):
        code, out = run(path, *args)
        assert code == 0, out
        assert "no queue yet" in out
    assert not (tmp_path / "q" / "queue.db").exists()


def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path)
    database = tmp_path / "q" / "queue.db"
    version_1_file(database)
    newer = sqlite_schema.SCHEMA_VERSION + 1
    conn = sqlite3.connect(database)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    for args in (("migrate", "--check"), ("migrate",)):
        code, out = run(path, *args)
        assert code == ExitCode.CONFIG, out
        assert f"schema version {newer}, newer than this program's" in out
        assert "upgrade Mailwright" in out
    assert sqlite_version(database) == newer


def pg_version(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('mailwright_schema')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT version FROM mailwright_schema").fetchone()
        return None if row is None else int(row[0])


def test_postgresql_check_then_migrate_an_empty_database(
    tmp_path: Path, postgres_database: str
) -> None:
    path = config(tmp_path, f'backend = "postgresql"\npostgresql = "{postgres_database}"\n')
    code, out = run(path, "migrate", "--check")
    assert code == 1, out
    assert f"schema version 0, this program's {postgres_schema.SCHEMA_VERSION}" in out
    assert "pending" in out
    assert pg_version(postgres_database) is None  # --check created nothing
    code, out = run(path, "migrate")
    assert code == 0, out
    assert f"migrated from schema version 0 to {postgres_schema.SCHEMA_VERSION}" in out
    assert "postgresql://127.0.0.1" in out  # the database named, without a password
    assert pg_version(postgres_database) == postgres_schema.SCHEMA_VERSION
    code, out = run(path, "migrate", "--check")
    assert code == 0, out
    assert "up to date" in out
    code, out = run(path, "list", "--json")
    assert (code, out.strip()) == (0, "[]")


def test_postgresql_newer_schema_is_refused_by_every_command(
    tmp_path: Path, postgres_database: str
) -> None:
    path = config(tmp_path, f'backend = "postgresql"\npostgresql = "{postgres_database}"\n')
    assert run(path, "migrate")[0] == 0
    newer = postgres_schema.SCHEMA_VERSION + 1
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute("UPDATE mailwright_schema SET version = %s", (newer,))
    for args in (("migrate", "--check"), ("migrate",)):
        code, out = run(path, *args)
        assert code == ExitCode.CONFIG, out
        assert f"has schema version {newer}, newer than this program's" in out
        assert "upgrade Mailwright on this node" in out
    code, out = run(path, "list")
    assert code != 0
    assert f"has schema version {newer}, newer than this program's" in out
    assert pg_version(postgres_database) == newer
