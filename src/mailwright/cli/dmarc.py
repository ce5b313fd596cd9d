"""``mailwright dmarc``: the Public Suffix List DMARC uses, and the next aggregate reports.

``update-psl --file FILE`` checks that FILE is a Public Suffix List and installs it,
atomically, where the daemon reads it (``dmarc.psl_file``, default
``<queue.directory>/public_suffix_list.dat``); a running daemon takes it at its next
reload (SIGHUP). The file is fetched by the operator (e.g. a cron job with curl from
publicsuffix.org): Mailwright itself never fetches it. ``report --dry-run`` shows the
aggregate reports of the period in progress as they stand: per policy domain the
messages and records counted, and which ``rua`` destinations would get the report or
why not (the external destination check of RFC 7489 7.1 is done, in DNS); ``--xml``
prints the XML too. Nothing is sent or deleted. Exit 0; 65 (EX_DATAERR) for a file that
is not a list; 69 (EX_UNAVAILABLE) when the store cannot be read.

Settings read: ``dmarc.*``, ``queue.*``, ``dns.*``, ``hostname``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import click

from mailwright.cli.settings import load_or_exit
from mailwright.core.dmarc import PublicSuffixes, check_list
from mailwright.core.sysexits import ExitCode
from mailwright.policy.dmarc import psl_path
from mailwright.policy.dmarc_reports import ReportRun


@click.group()
def dmarc() -> None:
    """DMARC (docs/authentication.md): the Public Suffix List and aggregate reports."""


@dmarc.command("update-psl")
@click.option(
    "--file",
    "source",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A Public Suffix List file (public_suffix_list.dat).",
)
@click.pass_context
def update_psl(ctx: click.Context, source: Path) -> None:
    """Install a Public Suffix List for the organizational domains of DMARC.

    \b
    Examples:
      curl -o /tmp/psl.dat https://publicsuffix.org/list/public_suffix_list.dat
      mailwright dmarc update-psl --file /tmp/psl.dat && systemctl reload mailwright
    """
    settings = load_or_exit(ctx)
    text = source.read_text(encoding="utf-8", errors="replace")
    try:
        rules = check_list(text)
    except ValueError as exc:
        click.echo(f"mailwright: {source}: {exc}", err=True)
        ctx.exit(ExitCode.DATAERR)
    target = psl_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    PublicSuffixes.from_file(temporary)  # the daemon will read it just so
    os.replace(temporary, target)
    click.echo(f"{target}: {rules} rules installed; reload the daemon to use them")


@dmarc.command("report")
@click.option("--dry-run", is_flag=True, required=True, help="Show, send nothing.")
@click.option("--xml", "show_xml", is_flag=True, help="Print each report's XML too.")
@click.pass_context
def report(ctx: click.Context, dry_run: bool, show_xml: bool) -> None:
    """Show the aggregate reports of the period in progress, as they stand.

    \b
    Examples:
      mailwright dmarc report --dry-run
      mailwright dmarc report --dry-run --xml
    """
    settings = load_or_exit(ctx)
    run = ReportRun.from_settings(settings)
    try:
        planned = asyncio.run(run.plan(time.time()))
    except Exception as exc:  # the store: sqlite3, OSError or StoreError
        click.echo(f"mailwright: cannot read the DMARC results: {exc}", err=True)
        ctx.exit(ExitCode.UNAVAILABLE)
    if not planned:
        click.echo("no DMARC results with rua= recorded in this period")
    for plan in planned:
        r = plan.report
        click.echo(
            f"{r.policy_domain}: {r.messages} message(s), {len(r.records)} record(s),"
            f" {r.begin}-{r.end}, {len(plan.data)} octets gzip ({r.filename(run.receiver)})"
        )
        for destination in plan.sent:
            click.echo(f"  to {destination.address}")
        for destination, why in plan.skipped:
            click.echo(f"  not to {destination.address}: {why}")
        if show_xml:
            click.echo(r.xml().decode())
