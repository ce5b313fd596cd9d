"""The stdlib-only config view of sendmail agrees with the full pydantic settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailwright.config import file, lite
from mailwright.config.lite import LiteConfigError, SubmitConfig
from mailwright.config.loader import ConfigError, load_settings
from tests.support.daemon import SRC


def both(path: Path) -> tuple[SubmitConfig, SubmitConfig]:
    settings = load_settings(path)
    return lite.load(str(path)), SubmitConfig.from_settings(settings, str(path))


def same(a: SubmitConfig, b: SubmitConfig) -> None:
    for key in SubmitConfig.__slots__:
        x, y = getattr(a, key), getattr(b, key)
        if key.endswith(("_dir", "_path")):
            x, y = os.path.normpath(x), os.path.normpath(y)
        assert x == y, key


@pytest.mark.parametrize(
    "text",
    [
        "",
        'hostname = "mx.example.org"\n',
        'hostname = "MX.example.org"\n[queue]\ndirectory = "./spool"\n',
        '[queue]\ndirectory = "/var/q"\n[local]\nsocket = "run/s.sock"\nmaildrop = "/md"\n'
        'domain = "Example.ORG"\ntrusted_users = ["www-data", "backup"]\n',
        "[server]\nmax_message_size = 1000\nmax_hop_count = 7\n"
        '[routing]\nlocal_domains = ["a.test", "b.test"]\n',
        '[queue]\nbackend = "postgresql"\npostgresql = "host=db dbname=mail"\n',
    ],
)
def test_lite_view_matches_the_full_settings(tmp_path: Path, text: str) -> None:
    path = tmp_path / "mailwright.toml"
    path.write_text(text)
    same(*both(path))


def test_defaults_match_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(file.ENV_VAR, raising=False)
    absent = tmp_path / "no-such" / "mailwright.toml"  # whatever /etc holds on this machine
    monkeypatch.setattr(file, "DEFAULT_PATH", str(absent))
    same(lite.load(None), SubmitConfig.from_settings(load_settings(None)))


def test_both_readers_report_file_problems_alike(tmp_path: Path) -> None:
    for text in ["[queue\n", "\xff"]:
        path = tmp_path / "bad.toml"
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(ConfigError) as full:
            load_settings(path)
        with pytest.raises(LiteConfigError) as light:
            lite.load(str(path))
        assert str(full.value) == str(light.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[queue\n", "TOML syntax error"),
        ("[queue]\ndirectory = 5\n", "queue.directory: must be a string"),
        ("[local]\ntrusted_users = 'root'\n", "local.trusted_users: must be a list"),
        ("[server]\nmax_hop_count = 0\n", "server.max_hop_count: must be a whole number >= 1"),
        ("[server]\nmax_message_size = true\n", "server.max_message_size"),
        ('hostname = "a b"\n', "hostname"),
        ("queue = 3\n", "queue.directory: expected a table"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(LiteConfigError, match=message) as info:
        lite.load(str(path))
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LiteConfigError, match="no such file"):
        lite.load(str(tmp_path / "nope.toml"))


def test_schema_validates_the_local_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[local]\ntrusted_users = ["a b"]\n')
    with pytest.raises(ConfigError, match=r"local\.trusted_users"):
        load_settings(path)
    path.write_text("[local]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"local\.bogus: unknown setting"):
        load_settings(path)


def test_qualify() -> None:
    config = SubmitConfig(
        path=None,
        hostname="h",
        queue_dir="/q",
        socket_path="/q/s",
        maildrop_dir="/q/m",
        domain="example.org",
    )
    assert config.qualify("user") == "user@example.org"
    assert config.qualify("a@b") == "a@b"


def test_the_sendmail_path_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from mailwright.cli import sendmail, draft, submit\n"
        "from mailwright.edge import localsmtp\n"
        "from mailwright.config import lite\n"
        "from mailwright.core import submission\n"
        "heavy = [m for m in ('pydantic', 'click', 'rich', 'uvloop', 'dns', 'dataclasses',"
        " 'asyncio', 'email', 'sqlite3') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        check=True,
    )
    assert out.stdout.decode().strip() == ""
