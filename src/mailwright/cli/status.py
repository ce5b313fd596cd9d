"""``mailwright status``: one screen saying whether the daemon is up and how it is doing.

Asks the running daemon over its control socket (``status`` request): pid,
uptime, listeners with their sessions, the queue by state, traffic since start,
milter health, the results of each authentication check since start (SPF, DMARC, ARC,
DANE, TLS reports: a line each) and the last warnings and errors. When no daemon answers it says
so, still shows the queue read from the store, and exits 69 (EX_UNAVAILABLE). A caller
the control socket (or the queue directory) is closed to is told "permission denied"
and exits 77 (EX_NOPERM): whether a daemon runs is then unknown, never "down".
A rich panel on a terminal, plain lines when piped, JSON with ``--json``.
Settings: ``queue.directory``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mailwright.cli.output import is_terminal, print_json
from mailwright.cli.settings import load_or_exit
from mailwright.config.schema import Settings
from mailwright.core.durations import short as short_duration
from mailwright.core.sysexits import ExitCode
from mailwright.daemon import control
from mailwright.queue.backend import queue_store
from mailwright.queue.store import QueueCounts, StoreError

if TYPE_CHECKING:  # imported when used: it loads prometheus_client, other commands need not
    from mailwright.web.status import Status

LAST_ERRORS = 5


def ask_daemon(settings: Settings) -> Status | None:
    """The running daemon's status; None when none answers; ``PermissionError`` when the
    caller may not use the control socket."""
    from mailwright.web.status import Status

    answer = control.ask(settings.queue.directory, "status", timeout=10)
    if not answer or not answer.get("ok") or not isinstance(answer.get("status"), dict):
        return None
    return Status.from_json(answer["status"])


def read_queue(settings: Settings) -> QueueCounts | None:
    """The queue straight from the store (the daemon is down); None without a queue."""
    store = queue_store(settings.queue)
    try:
        store.open_for_reading()
        return store.queue_counts(time.time())
    except StoreError:
        return None
    finally:
        store.close()


def queue_line(q: QueueCounts, now: float) -> str:
    oldest = f", oldest {short_duration(now - q.oldest)} old" if q.oldest else ""
    return (
        f"{q.messages} message(s) ({q.active_messages} active, {q.held_messages} on hold); "
        f"recipients: {q.due} due, {q.deferred} deferred, {q.delivering} delivering, "
        f"{q.held} held{oldest}"
    )


def workers_text(status: Status, sep: str) -> str:
    """``sep`` and "4 workers" when the daemon runs several worker processes, else nothing."""
    return f"{sep}{status.workers_line}" if status.workers > 1 else ""


def plain_lines(status: Status) -> list[str]:
    t = status.totals
    lines = [
        f"mailwright: up, pid {status.pid}{workers_text(status, ', ')},"
        f" uptime {short_duration(status.uptime)},"
        f" version {status.version}, delivery {status.delivery_mode}",
        f"host: {status.hostname}; queue directory {status.queue_directory}",
    ]
    for li in status.listeners:
        lines.append(f"listener: {li.name} {li.address} ({li.kind}), {li.sessions} session(s)")
    if status.http:
        lines.append(f"http: {status.http}")
    lines.append(f"queue: {queue_line(status.queue, status.now)}")
    refusing = status.queue.refusing_text()
    if refusing:
        lines.append(f"queue: {refusing}")
    lines.append(
        f"since start: {t.received} received, {t.rejected} rejected, {t.delivered} delivered,"
        f" {t.deferred} deferred, {t.bounced} bounced"
    )
    for m in status.milters:
        last = f"; last error at {m.last_error_stage}: {m.last_error}" if m.last_error else ""
        lines.append(f"milter: {m.name}: {m.calls} call(s), {m.failures} failure(s){last}")
    for a in status.auth:
        lines.append(f"{a.check}: {a.summary()}")
    errors = status.errors[:LAST_ERRORS]
    lines.append("last errors:" if errors else "last errors: none")
    for e in errors:
        lines.append(f"  {time.strftime('%H:%M:%S', time.localtime(e.at))} {e.level} {e.message}")
    return lines


def show_rich(status: Status) -> None:
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    t, q = status.totals, status.queue
    head = Text.assemble(
        ("up", "bold green"),
        f"  pid {status.pid}{workers_text(status, '  ')}"
        f"  uptime {short_duration(status.uptime)}  version {status.version}"
        f"  delivery {status.delivery_mode}",
    )
    listeners = Table(title="Listeners", title_justify="left", expand=True)
    for col in ("name", "address", "kind", "sessions"):
        listeners.add_column(col)
    for li in status.listeners:
        listeners.add_row(Text(li.name), Text(li.address), Text(li.kind), str(li.sessions))
    queue = Table(title="Queue", title_justify="left", expand=True)
    for col in ("messages", "active", "on hold", "due", "deferred", "delivering", "held"):
        queue.add_column(col, justify="right")
    queue.add_row(
        *(
            str(v)
            for v in (
                q.messages,
                q.active_messages,
                q.held_messages,
                q.due,
                q.deferred,
                q.delivering,
                q.held,
            )
        )
    )
    traffic = Text(
        f"since start: {t.received} received, {t.rejected} rejected, {t.delivered} delivered,"
        f" {t.deferred} deferred, {t.bounced} bounced"
    )
    parts: list[Any] = [head, listeners, queue, traffic]
    refusing = q.refusing_text()
    if refusing:
        parts.insert(3, Text(refusing, style="bold red"))
    if status.http:
        parts.append(Text(f"status page: {status.http}"))
    for m in status.milters:
        style = "red" if m.failures else "green"
        line = Text.assemble(
            (f"milter {m.name}", style), f": {m.calls} calls, {m.failures} failures"
        )
        if m.last_error:
            line.append(f" (last: {m.last_error})")
        parts.append(line)
    for a in status.auth:
        style = "green" if a.enabled else "dim"
        parts.append(Text.assemble((a.title, style), f": {a.summary()}"))
    errors = status.errors[:LAST_ERRORS]
    parts.append(Text("last errors:" if errors else "last errors: none", style="bold"))
    for e in errors:
        when = time.strftime("%H:%M:%S", time.localtime(e.at))
        style = "red" if e.level in ("ERROR", "CRITICAL") else "yellow"
        parts.append(Text.assemble(f"  {when} ", (e.level, style), f" {e.message}"))
    title = Text(f"Mailwright on {status.hostname}")
    Console().print(Panel(Group(*parts), title=title))


def denied_text(where: Path) -> str:
    return (
        f"cannot use {where}: permission denied (run as root or the daemon's user);"
        " whether the daemon runs is unknown"
    )


def show_down(settings: Settings, as_json: bool, denied: bool = False) -> None:
    """The daemon does not answer (``denied``: this user may not ask it)."""
    counts = None if denied else read_queue(settings)
    where = control.socket_path(settings.queue.directory)
    why = denied_text(where) if denied else f"no daemon answers on {where}"
    state = "permission denied" if denied else "down"
    if as_json:
        queue = None if counts is None else dataclasses.asdict(counts)
        print_json(
            {
                "up": None if denied else False,
                "state": state,
                "reason": why,
                "queue_directory": str(settings.queue.directory),
                "queue": queue,
            }
        )
        return
    queue_text = queue_line(counts, time.time()) if counts is not None else "no queue found"
    # a mark a crash left: the next start checkpoints before it acknowledges anything
    refusing = None if counts is None else counts.refusing_text()
    if is_terminal():
        from rich.console import Console
        from rich.markup import escape

        console = Console()
        console.print(f"[bold red]{state}[/]: {escape(why)}")
        if not denied:
            console.print(f"queue: {escape(queue_text)}")
        if refusing:
            console.print(f"[bold red]queue: {escape(refusing)}[/]")
    else:
        click.echo(f"mailwright: {state} ({why})")
        if not denied:
            click.echo(f"queue: {queue_text}")
        if refusing:
            click.echo(f"queue: {refusing}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show whether the daemon runs: pid, uptime, listeners, queue, last errors.

    Exit status 0 when the daemon is up, 69 when it is not, 77 when this user may
    not ask it (permission denied on its control socket).

    \b
    Examples:
      mailwright status
      mailwright status --json
    """
    settings = load_or_exit(ctx)
    try:
        current = ask_daemon(settings)
    except PermissionError:
        show_down(settings, as_json, denied=True)
        ctx.exit(ExitCode.NOPERM)
    if current is None:
        show_down(settings, as_json)
        ctx.exit(ExitCode.UNAVAILABLE)
    assert current is not None
    if as_json:
        print_json({"up": True, **current.as_json()})
    elif is_terminal():
        show_rich(current)
    else:
        click.echo("\n".join(plain_lines(current)))
