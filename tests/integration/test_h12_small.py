"""Issue 12 item 23, small things a newcomer hit: ``--version``, help text without
reStructuredText, ``mailq``'s queue path, who said what in delay and expiry notices, the
status page's bounce links, replies and recipients, and no secret in a config error.

Real programs in subprocesses (the installed-style entry points of tests.support.sendmail),
real daemons, real SMTP peers (Postfix's smtp-sink) and real HTTP requests.
"""

from __future__ import annotations

import importlib.metadata
import re
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mailwright.cli.main import cli
from tests.support.daemon import SRC, Mailwright
from tests.support.sendmail import Tools, short_tmp

VERSION = importlib.metadata.version("mailwright")


def mailwright(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if config is not None:
        env["MAILWRIGHT_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "mailwright", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


def send(mw: Mailwright, rcpts: tuple[str, ...], sender: str = "a@x.test") -> str:
    """One message over SMTP; returns its queue id."""
    with smtplib.SMTP("127.0.0.1", mw.port, timeout=20) as client:
        client.ehlo("client.test")
        client.mail(sender)
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(b"Subject: small\r\nFrom: a@x.test\r\n\r\nbody\r\n")
    assert code == 250, text
    found = re.search(rb"2\.0\.0 (\w+) Message accepted", text)
    assert found, text
    return found.group(1).decode()


# ---- --version ----------------------------------------------------------------------------------
def test_mailwright_version_comes_from_the_package_metadata() -> None:
    done = mailwright("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"mailwright {VERSION}\n"


def test_sendmail_version_and_bV_agree() -> None:
    with short_tmp() as root:
        tools = Tools(Mailwright(root), root / "bin")
        for args in (("--version",), ("-bV",)):
            done = tools.run(*args)
            assert done.returncode == 0, done.stderr
            expected = f"Mailwright {VERSION} (Sendmail-compatible command line)\n"
            assert done.stdout.decode() == expected


# ---- --help -------------------------------------------------------------------------------------
RST = re.compile(r"``|`[^`\s][^`]*`_?|:(?:func|class|meth|ref|rfc|mod|attr):|^\s*\.\. \w+::", re.M)


def commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            yield from commands(sub, (*path, name))


def test_no_help_text_has_restructuredtext_markup() -> None:
    runner = CliRunner()
    seen = 0
    for path in commands(cli):
        result = runner.invoke(cli, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        assert not RST.search(result.output), (path, RST.search(result.output))
        seen += 1
    assert seen > 20  # every subcommand was looked at
    flush = mailwright("queue", "flush", "--help")  # the one the newcomer quoted
    assert "like sendmail -q." in flush.stdout and "``" not in flush.stdout


# ---- mailq's queue path -------------------------------------------------------------------------
def test_mailq_and_queue_list_print_the_resolved_queue_path() -> None:
    with short_tmp() as root:
        (root / "var").mkdir()
        spelled = f"{root}/var/../spool"  # as a configuration relative to etc/ might say
        mw = Mailwright(root, {"queue": {"directory": spelled}})
        mw.start()
        try:
            tools = Tools(mw, root / "bin")
            empty = tools.run(program="mailq")
            assert empty.stdout.decode() == f"{root}/spool is empty\n\t\tTotal requests: 0\n"
            send(mw, ("b@y.test",))
            listing = tools.run(program="mailq").stdout.decode()
            assert listing.splitlines()[0] == f"\t\t{root}/spool (1 request)"
            assert tools.run("-bP").stdout.decode() == f"{root}/spool: entries=1\n"
            admin = mw.cli("queue", "list").stdout.decode()
            assert admin.splitlines()[0] == f"\t\t{root}/spool (1 request)"
            assert ".." not in listing + admin
        finally:
            mw.stop()


# ---- secrets in configuration errors ------------------------------------------------------------
@pytest.mark.parametrize("token", ['"hunter2"', '"two words"', "12345678"])
def test_a_bad_http_token_is_never_echoed(tmp_path: Path, token: str) -> None:
    config = tmp_path / "mailwright.toml"
    config.write_text(f"[http]\nport = 8099\ntoken = {token}\n")
    secret = token.strip('"')
    for args in (("config", "check"), ("serve",)):
        done = mailwright("--config", str(config), *args)
        assert done.returncode == 78, done.stderr
        assert "http.token" in done.stderr
        assert secret not in done.stderr and secret not in done.stdout
    # other settings still show what was given: the newcomer sees the typo
    config.write_text('[http]\nport = 8099\naddress = "localhost"\n')
    done = mailwright("--config", str(config), "config", "check")
    assert "http.address" in done.stderr and "'localhost'" in done.stderr
