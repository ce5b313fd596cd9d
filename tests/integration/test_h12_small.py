"""Issue 12 item 23, small things a newcomer hit: ``--version``, help text without
reStructuredText, ``mailq``'s queue path, who said what in delay and expiry notices, the
status page's bounce links, replies and recipients, and no secret in a config error.

Real programs in subprocesses (the installed-style entry points of tests.support.sendmail),
real daemons, real SMTP peers (Postfix's smtp-sink) and real HTTP requests.
"""

from __future__ import annotations

import email
import email.policy
import importlib.metadata
import re
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from mailwright.cli.main import cli
from tests.support import smtp_sink
from tests.support.daemon import SRC, Mailwright, deep_merge, free_port, wait_until
from tests.support.peers import peer
from tests.support.sendmail import Tools, short_tmp
from tests.support.web import Web, value

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


# ---- the status page ----------------------------------------------------------------------------
TOKEN = "h12-small-status-token"


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[dict[str, smtp_sink.SmtpSink]]:
    good = smtp_sink.SmtpSink(tmp_path / "good").start()
    bad = smtp_sink.SmtpSink(
        tmp_path / "bad", "-B", "550 5.1.1 No such user here", "-f", "RCPT"
    ).start()
    soft = smtp_sink.SmtpSink(tmp_path / "soft", "-r", "RCPT").start()
    try:
        yield {"good": good, "bad": bad, "soft": soft}
    finally:
        for sink in (good, bad, soft):
            sink.stop()


def relaying(root: Path, sinks: dict[str, smtp_sink.SmtpSink], **extra: Any) -> Mailwright:
    """A daemon delivering at once: bad.test refuses RCPT with 550 5.1.1, soft.test with a
    4xx, closed.test is a closed port, everything else (the reports) goes to the good sink."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "transport").write_text(
        f"bad.test smtp:[127.0.0.1]:{sinks['bad'].port}\n"
        f"soft.test smtp:[127.0.0.1]:{sinks['soft'].port}\n"
        "closed.test smtp:[127.0.0.1]:1\n"
        f"* smtp:[127.0.0.1]:{sinks['good'].port}\n"
    )
    config: dict[str, Any] = {
        "routing": {"transport_table": str(root / "transport")},
        "delivery": {"mode": "background", "idle_connection_timeout": 0.5},
        "queue": {"host_status_timeout": 0},
        "http": {"port": free_port(), "token": TOKEN},
    }
    return Mailwright(root, deep_merge(config, extra)).start()


def summary_cells(page: str) -> list[str]:
    """The cells of the status page's queue summary row."""
    summary = page[page.index('id="summary"') : page.index('id="messages"')]
    return cells(re.findall(r"<tbody><tr>(.*?)</tr>", summary)[0])


def cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


@peer("smtp-sink", smtp_sink.available(), "Postfix's smtp-sink is not installed")
def test_status_page_links_bounces_reads_replies_and_counts_recipients(
    tmp_path: Path, sinks: dict[str, smtp_sink.SmtpSink]
) -> None:
    mw = relaying(tmp_path / "mw", sinks)
    try:
        qid = send(mw, ("nobody@bad.test", "later@closed.test", "again@closed.test"))
        assert "dsn=5.1.1" in mw.wait_log(f"{qid}: to=<nobody@bad.test>")
        assert "stat=Sent" in mw.wait_log("to=<a@x.test>")  # the bounce left the queue
        web = Web(mw.config["http"]["port"])
        wait_until(
            lambda: value(web.scrape(), "mailwright_queue_recipients", state="deferred") == 2,
            what="two deferred recipients",
        )
        # the bounce's "stat=Sent" line comes before the commit that removes it
        wait_until(
            lambda: summary_cells(web.get("/status", token=TOKEN).text)[0] == "1",
            what="the bounce gone from the queue",
        )
        page = web.get("/status", token=TOKEN).text
    finally:
        mw.stop()
    bounces = page[page.index('id="bounces"') : page.index('id="milters"')]
    row = re.search(r"<tbody><tr>(.*?)</tr>", bounces)
    assert row, bounces
    _, link, sender, recipient, reply, remote = cells(row.group(1))
    assert link == f'<a href="/message/{qid}"><code>{qid}</code></a>'
    assert (sender, recipient) == ("&lt;a@x.test&gt;", "&lt;nobody@bad.test&gt;")
    assert reply == "550 5.1.1 No such user here"
    assert remote.startswith("127.0.0.1")

    summary = page[page.index('id="summary"') : page.index('id="messages"')]
    queue_header = re.findall(r"<th>([^<]*)</th>", summary)[:9]
    assert queue_header[3] == "Recipients"
    queue_row = summary_cells(page)
    assert queue_row[0] == "1"  # one message, ...
    assert queue_row[3] == "2"  # ... two recipients still queued (the third bounced)
    assert int(queue_row[5]) == 2  # both deferred
    assert all(cell for cell in queue_row)  # no empty column
    traffic_row = cells(re.findall(r"<tbody><tr>(.*?)</tr>", summary)[1])
    assert all(cell for cell in traffic_row)


# ---- who said what in delay and expiry notices -------------------------------------------------
def reports(sink: smtp_sink.SmtpSink) -> dict[str, EmailMessage]:
    """The delivery reports the sink received, by Subject."""
    found = {}
    for message in sink.messages():
        if message.mail_args.startswith("<>"):
            report = email.message_from_bytes(message.content, policy=email.policy.default)
            assert isinstance(report, EmailMessage)
            found[str(report["Subject"])] = report
    return found


def words_and_fields(report: EmailMessage) -> tuple[str, str]:
    """The human-readable part (unwrapped) and the delivery-status part."""
    parts = list(report.walk())
    text = next(p for p in parts if p.get_content_type() == "text/plain")
    status = next(p for p in parts if p.get_content_type() == "message/delivery-status")
    assert isinstance(text, EmailMessage)
    fields = re.sub(r"\r?\n[ \t]+", " ", status.as_string())  # unfolded
    return " ".join(text.get_content().split()), fields


@peer("smtp-sink", smtp_sink.available(), "Postfix's smtp-sink is not installed")
def test_delay_and_expiry_notices_quote_a_server_only_for_what_it_said(
    tmp_path: Path, sinks: dict[str, smtp_sink.SmtpSink]
) -> None:
    retry = {
        "first_retry": 0.5,
        "max_retry_interval": 0.5,
        "delay_warning": 0.001,  # the first failed attempt is late enough for a warning
        "max_lifetime": 2,
    }
    mw = relaying(tmp_path / "mw", sinks, queue=retry)
    try:
        qid = send(mw, ("later@closed.test", "busy@soft.test"))
        wait_until(lambda: len(reports(sinks["good"])) == 2, what="a delay and a failure report")
        mw.wait_log(f"{qid}: to=<later@closed.test>")
    finally:
        mw.stop()
    found = reports(sinks["good"])
    peer = "127.0.0.1 [127.0.0.1]"
    closed = f"connect to {peer}:1: Connection refused"

    delay, fields = words_and_fields(found["Delayed Mail (still being retried)"])
    # the refused connection is our own finding, not something a server said
    assert (
        f"<later@closed.test>: delivery is delayed (status 4.4.1). Reason: 451 4.4.1 {closed}"
        in delay
    )
    assert f"Diagnostic-Code: X-Mailwright; 451 4.4.1 {closed}" in fields
    closed_block = next(b for b in fields.split("\n\n") if "later@closed.test" in b)
    assert "Remote-MTA" not in closed_block  # no server reported anything
    soft_block = next(b for b in fields.split("\n\n") if "busy@soft.test" in b)
    assert "Remote-MTA: dns; 127.0.0.1" in soft_block
    # smtp-sink really refused the RCPT: that one is quoted as the server's
    quoted = re.search(r"Diagnostic-Code: smtp; (4\d\d 4\.\d\.\d [^\n]+)", fields)
    assert quoted, fields
    reply = quoted.group(1).strip()  # 450 4.3.0 Error: command failed
    status = reply.split()[1]
    assert (
        f"<busy@soft.test>: delivery is delayed (status {status}). "
        f"The mail server {peer} said: {reply}"
    ) in delay
    assert delay.count(" said:") == 1

    failure, fields = words_and_fields(found["Undelivered Mail Returned to Sender"])
    expired = "Delivery time expired; last error:"
    assert (
        f"<later@closed.test>: delivery failed (status 4.4.7). Reason: 451 4.4.7 {expired} {closed}"
        in failure
    )
    assert (
        f"<busy@soft.test>: delivery failed (status 4.4.7). "
        f"Reason: {reply[:3]} 4.4.7 {expired} {peer} said: {reply}"
    ) in failure
    assert "The mail server" not in failure  # Mailwright gave up: its own words throughout
    assert "Diagnostic-Code: smtp;" not in fields


# ---- the man page -------------------------------------------------------------------------------
MAN_PAGE = SRC.parent / "docs" / "man" / "mailwright.8"


@peer("groff", Path("/usr/bin/groff").exists(), "groff renders the man page")
def test_the_man_page_renders_cleanly_and_names_every_command() -> None:
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P", "-c", str(MAN_PAGE)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    page = re.sub(r".\x08", "", done.stdout).replace("\u2010", "-")  # no overstrike, hyphens
    for path in commands(cli):
        if path:
            assert path[-1] in page, path  # every command and subcommand is listed
    assert "--version" in page and "mailwright [-C file] command" in page
