"""``mailwright aliases build|test`` and ``mailwright address test`` (click, in process)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailwright.cli.main import cli
from mailwright.config.loader import load_settings
from mailwright.routing.aliases import compile_aliases
from mailwright.routing.resolution import verify_lines


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "aliases").write_text(
        "postmaster: root\n"
        'staff: root, ext@remote.test, "|/usr/bin/logger"\n'
        "broken line\n"
        "loop: loop2\nloop2: loop\n"
    )
    (tmp_path / "transport").write_text("remote.test smtp:[192.0.2.9]:2525\n")
    path = tmp_path / "mailwright.toml"
    path.write_text(
        'hostname = "mx.test"\n'
        '[queue]\ndirectory = "q"\n'
        '[routing]\nalias_file = "aliases"\ntransport_table = "transport"\n'
        '[local_delivery]\nmail_spool = "mail"\n'
    )
    return path


def alias_file_user() -> str:
    """Programs in a root-owned alias file run as the default user, else as its owner."""
    return "nobody" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def test_build_reports_bad_lines_and_the_summary(config: Path) -> None:
    code, out, err = run(config, "aliases", "build")
    source = config.parent / "aliases"
    assert code == 65  # bad lines: EX_DATAERR, but the good entries are in the table
    assert err == f"{source}:3: missing colon\n"
    assert out == f"{source}: 4 aliases, longest 41 bytes, 78 bytes total\n"
    code, out, _ = run(config, "aliases", "test", "Staff", "nosuch")
    assert code == 67
    assert out == "Staff: root, ext@remote.test, |/usr/bin/logger\nnosuch: no such alias\n"


def test_address_test_shows_the_chain_and_the_mailers(config: Path) -> None:
    run(config, "aliases", "build")
    code, out, _ = run(config, "address", "test", "staff")
    assert code == 0
    assert out.splitlines() == [
        "staff@mx.test: alias staff",
        "  root@mx.test... deliverable: mailer local, user root"
        f" (mbox {config.parent / 'mail' / 'root'})",
        "  ext@remote.test... deliverable: mailer esmtp, host [192.0.2.9]:2525,"
        " user ext@remote.test",
        f'  "|/usr/bin/logger"... deliverable: mailer prog, user {alias_file_user()}',
    ]
    code, out, _ = run(config, "address", "test", "nosuch@mx.test")
    assert code == 67 and out == "nosuch@mx.test... 550 5.1.1 <nosuch@mx.test>... User unknown\n"
    code, out, _ = run(config, "address", "test", "loop")
    assert code == 67 and "aliasing/forwarding loop broken" in out


def test_entry_points_for_sendmail(config: Path) -> None:
    settings = load_settings(config)
    assert settings.routing.alias_file is not None
    report = compile_aliases(settings.routing.alias_file, settings.alias_database)
    assert report.summary().endswith("4 aliases, longest 41 bytes, 78 bytes total")
    assert str(report.problems[0]).endswith("aliases:3: missing colon")
    mbox = config.parent / "mail" / "root"
    assert verify_lines(settings, "postmaster@mx.test") == [
        f"root@mx.test... deliverable: mailer local, user root (mbox {mbox})"
    ]
    with pytest.raises(LookupError, match="User unknown"):
        verify_lines(settings, "nosuch@mx.test")
