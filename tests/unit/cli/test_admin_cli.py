"""The queue-less admin commands: ``--help`` shows examples; ``address test`` and
``access test`` print JSON with ``--json`` (click, in process, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailwright.cli.main import cli


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "aliases").write_text("postmaster: root\nstaff: root, ext@remote.test\n")
    (tmp_path / "access").write_text(
        "Connect:192.0.2.7 REJECT\nFrom:spammer@bad.test ERROR:550 5.7.1 go away\n"
    )
    path = tmp_path / "mailwright.toml"
    path.write_text(
        'hostname = "mx.test"\n'
        '[queue]\ndirectory = "q"\n'
        '[routing]\nalias_file = "aliases"\n'
        '[local_delivery]\nmail_spool = "mail"\n'
        '[access]\ntable = "access"\n'
    )
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    return result.exit_code, result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ("aliases", "build"),
        ("aliases", "test"),
        ("auth", "check"),
        ("auth", "passwd"),
        ("auth", "deluser"),
        ("access", "check"),
        ("access", "test"),
        ("tls", "check"),
        ("address", "test"),
    ],
)
def test_help_has_examples(config: Path, command: tuple[str, ...]) -> None:
    code, out = run(config, *command, "--help")
    assert code == 0
    example = out.split("Example", 1)[1].splitlines()[1].strip()  # the first example
    assert example.startswith(f"mailwright {' '.join(command)}")


def test_address_test_json(config: Path) -> None:
    assert run(config, "aliases", "build")[0] == 0
    code, out = run(config, "address", "test", "--json", "staff", "nosuch", "bad@@x")
    assert code == 67
    staff, nosuch, bad = json.loads(out)
    assert staff["address"] == "staff" and staff["resolved"] == "staff@mx.test"
    assert staff["deliverable"] is True and staff["temporary_failure"] is None
    assert [(d["address"], d["mailer"]) for d in staff["destinations"]] == [
        ("root@mx.test", "local"),
        ("ext@remote.test", None),
    ]
    assert staff["trace"][0] == "staff@mx.test: alias staff"
    assert nosuch["deliverable"] is False
    (dest,) = nosuch["destinations"]
    assert dest["mailer"] == "error" and dest["error"].startswith("550 5.1.1")
    assert bad == {"address": "bad@@x", "deliverable": False, "error": bad["error"]}
    assert bad["error"]


def test_access_test_json(config: Path) -> None:
    args = ("access", "test", "--json", "--connect", "192.0.2.7", "--from", "spammer@bad.test")
    code, out = run(config, *args, "--to", "a@b.test")
    assert code == 0
    connect, sender, rcpt = json.loads(out)
    assert connect == {
        "case": "Connect:192.0.2.7",
        "entry": {"line": 1, "text": "Connect:192.0.2.7 REJECT", "action": "REJECT"},
        "outcome": connect["outcome"],
    }
    assert connect["outcome"].startswith("line 1: Connect:192.0.2.7 REJECT => 550 5.7.1")
    assert sender["case"] == "From:<spammer@bad.test>" and sender["entry"]["action"] == "ERROR"
    assert sender["outcome"].endswith("=> 550 5.7.1 go away")
    assert rcpt == {
        "case": "To:<a@b.test>",
        "entry": None,
        "outcome": "no entry matches (the defaults apply)",
    }
