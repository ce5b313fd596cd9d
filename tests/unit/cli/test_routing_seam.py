"""The seam to the aliases module: absent today, wired the moment it exists."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.cli import routing_seam
from mailwright.config.lite import SubmitConfig

CONFIG = SubmitConfig(
    path=None,
    hostname="mx.test",
    queue_dir="/q",
    socket_path="/q/s",
    maildrop_dir="/q/m",
    domain="mx.test",
    local_domains=("mx.test", "localhost"),
)


@pytest.fixture
def aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """Stands in for the aliases module another piece of work will add."""
    config = tmp_path / "c.toml"
    config.write_text('hostname = "mx.test"\n')
    monkeypatch.setenv("MAILWRIGHT_CONFIG", str(config))
    module = types.ModuleType(routing_seam.ALIASES_MODULE)
    module.__spec__ = importlib.machinery.ModuleSpec(routing_seam.ALIASES_MODULE, None)
    monkeypatch.setitem(sys.modules, routing_seam.ALIASES_MODULE, module)
    yield module


def test_without_the_module(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routing_seam, "ALIASES_MODULE", "mailwright.routing.not_there")
    assert routing_seam.aliases_module() is None
    assert routing_seam.rebuild_aliases(None) == 69
    assert capsys.readouterr().err == "mailwright: aliases are not supported yet\n"
    assert routing_seam.verify(["root", "a@example.org", "x@@y"], CONFIG, None) == 67
    assert capsys.readouterr().out.splitlines() == [
        "root@mx.test... deliverable: mailer local, user root",
        "a@example.org... deliverable: mailer esmtp, host example.org, user a@example.org",
        "x@@y... invalid address: invalid local part",
    ]


def test_newaliases_calls_build_aliases(
    aliases: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = []

    def build_aliases(settings: object) -> str:
        seen.append(settings)
        return "/etc/aliases: 3 aliases, longest 10 bytes, 30 bytes total"

    aliases.build_aliases = build_aliases  # type: ignore[attr-defined]
    assert routing_seam.rebuild_aliases(None) == 0
    assert capsys.readouterr().out == "/etc/aliases: 3 aliases, longest 10 bytes, 30 bytes total\n"
    assert getattr(seen[0], "hostname", None) == "mx.test"


def test_newaliases_reports_a_bad_file(
    aliases: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    def build_aliases(settings: object) -> str:
        raise ValueError("/etc/aliases:3: missing colon")

    aliases.build_aliases = build_aliases  # type: ignore[attr-defined]
    assert routing_seam.rebuild_aliases(None) == 65
    assert capsys.readouterr().err == "mailwright: /etc/aliases:3: missing colon\n"


def test_bv_asks_the_resolver(
    aliases: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    def resolve_address(settings: object, address: str) -> list[str]:
        if address.startswith("nobody-here"):
            raise LookupError("User unknown")
        return [f"{address}... deliverable: mailer local, user {address.partition('@')[0]}x"]

    aliases.resolve_address = resolve_address  # type: ignore[attr-defined]
    assert routing_seam.verify(["root", "nobody-here"], CONFIG, None) == 67
    assert capsys.readouterr().out.splitlines() == [
        "root@mx.test... deliverable: mailer local, user rootx",
        "nobody-here@mx.test... User unknown",
    ]
