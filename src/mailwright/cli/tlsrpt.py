"""``mailwright tlsrpt report``: SMTP TLS reports (RFC 8460) now, or what they would be.

``--dry-run`` prints the reports the next run would send (the days that are due, or today's
so far when none is), each with the addresses of its domain's ``_smtp._tls`` record, and
sends nothing; without it the reports are sent now (``--day`` names one day, ``today``
included: cut at this moment). Asks the running daemon through its control socket (it
flushes its counts first, and its queue carries the mailed reports); with no daemon, a
dry run reads the store itself and a real run is refused (mail needs the daemon's queue).
JSON with ``--json``, else one summary line per domain. Exit 0; 69 (EX_UNAVAILABLE) when
the run failed or cannot be made.

Settings read: ``tls_reporting.*``, ``queue.*``, ``dns.*`` (through ``daemon.tlsreports``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click

from mailwright.cli.output import print_json
from mailwright.cli.settings import load_or_exit
from mailwright.core.sysexits import ExitCode
from mailwright.daemon import control
from mailwright.daemon.tlsreports import TlsReporting


@click.group()
def tlsrpt() -> None:
    """SMTP TLS reporting (RFC 8460, docs/tlsrpt.md)."""


@tlsrpt.command("report")
@click.option("--dry-run", is_flag=True, help="Show the next reports; send nothing.")
@click.option("--day", metavar="YYYY-MM-DD", help="Report this UTC day (or 'today').")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@click.pass_context
def report(ctx: click.Context, dry_run: bool, day: str | None, as_json: bool) -> None:
    """Send the TLS reports that are due (or, with --dry-run, show them)."""
    settings = load_or_exit(ctx)
    if day == "today":
        day = time.strftime("%Y-%m-%d", time.gmtime())
    elif day is not None:
        try:
            time.strptime(day, "%Y-%m-%d")
        except ValueError:
            click.echo(f"mailwright: --day must be YYYY-MM-DD or 'today', not {day!r}", err=True)
            sys.exit(ExitCode.USAGE)
    answer = control.request(
        settings.queue.directory, "tlsrpt", timeout=300, day=day, dry_run=dry_run
    )
    if answer is None and dry_run:  # no daemon: read the store ourselves
        reporting = TlsReporting(lambda: settings, None, enqueue=None, sends=True)
        answer = asyncio.run(reporting.control({"day": day, "dry_run": True}))
    if answer is None:
        click.echo("mailwright: no daemon is running to send the reports", err=True)
        sys.exit(ExitCode.UNAVAILABLE)
    if not answer.get("ok"):
        click.echo(f"mailwright: {answer.get('error')}", err=True)
        sys.exit(ExitCode.UNAVAILABLE)
    reports: list[dict[str, Any]] = answer.get("reports") or []
    if as_json:
        print_json(reports)
        return
    if not reports:
        click.echo("no TLS reports")
    for entry in reports:
        click.echo(_line(entry))


def _line(entry: dict[str, Any]) -> str:
    policies = entry["report"]["policies"]
    good = sum(p["summary"]["total-successful-session-count"] for p in policies)
    bad = sum(p["summary"]["total-failure-session-count"] for p in policies)
    rua = ", ".join(entry.get("rua") or []) or "no TLSRPT record"
    sent = entry.get("sent")
    what = "" if sent is None else " -> " + (", ".join(sent) or "nothing sent")
    return f"{entry['day']} {entry['domain']}: {good} successful, {bad} failed; {rua}{what}"
