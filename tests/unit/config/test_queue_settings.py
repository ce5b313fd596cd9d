"""[queue] backend settings: checked at load without a connection; secrets never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.config.loader import ConfigError, load_settings
from mailwright.config.schema import masked_conninfo


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "mailwright.toml"
    path.write_text(text)
    return load_settings(path)


def test_postgresql_backend_needs_a_connection_string(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"queue: .*needs postgresql"):
        load(tmp_path, '[queue]\nbackend = "postgresql"\n')


def test_the_connection_string_is_not_contacted_at_load(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        '[queue]\nbackend = "postgresql"\npostgresql = "host=nowhere.invalid dbname=x"\n'
        'postgresql_password_file = "pgpass"\n',
    )
    assert settings.queue.postgresql_password_file == tmp_path / "pgpass"  # type: ignore[attr-defined]


def test_a_wrong_connection_string_type_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[queue]\npostgresql = 12345678\n")
    assert "queue.postgresql" in str(caught.value) and "12345678" not in str(caught.value)


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"queue\.backend"):
        load(tmp_path, '[queue]\nbackend = "mysql"\n')


@pytest.mark.parametrize(
    ("conninfo", "shown"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:********@h:5432/db"),
        ("postgres://u:s3cret@h/db?password=s3cret&sslmode=require",
         "postgres://u:********@h/db?password=********&sslmode=require"),
        ("host=h password=s3cret dbname=db", "host=h password=******** dbname=db"),
        ("host=h password = 'se cret' dbname=db", "host=h password = ******** dbname=db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("host=h dbname=db", "host=h dbname=db"),
    ],
)  # fmt: skip
def test_masked_conninfo_hides_the_password(conninfo: str, shown: str) -> None:
    assert masked_conninfo(conninfo) == shown
