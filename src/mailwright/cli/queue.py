"""``mailwright queue ...``: list, show, flush, hold, release, delete and bounce messages;
``migrate`` the queue store's schema.

Works whether or not the daemon runs. ``hold``, ``release``, ``delete``, ``bounce`` and
``flush`` are administrative actions (``daemon.admin``): a running daemon does them
itself (the control socket's ``admin`` request), logs one mail log line per message
naming the user, and counts them; without a daemon this process does them through the
same code on its own store, holding the queue lock (``daemon.queuelock``) meanwhile so
that no daemon starts beside it, logging where ``[log]`` says, and ``flush`` then runs
the queue in the foreground. ``sendmail -q`` is such a flush (``flush_queue``). No
command opens a second writer while the daemon runs. A flush never schedules a held message
and says so. Settings: ``queue.directory``, ``log.*`` and, for a foreground run,
everything delivery reads.

``migrate`` applies the pending schema migrations of the configured store and says from
which version to which (``--check``: exit 0 when up to date, 1 when migrations are
pending, changing nothing). A store of a newer version than this program's is refused
(exit 78, EX_CONFIG), by this command as by every other. A SQLite queue is migrated
holding the queue lock (no daemon runs beside; a missing file is left for the daemon to
create); a PostgreSQL one under the database's migration lock, as a starting daemon does.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from mailwright.cli.mailq import as_json, format_queue
from mailwright.cli.output import fail, is_terminal, print_json, table
from mailwright.cli.settings import load_or_exit
from mailwright.config.schema import Settings
from mailwright.core.sysexits import ExitCode
from mailwright.daemon import control
from mailwright.daemon.admin import Admin
from mailwright.daemon.queuelock import QueueBusyError, QueueLock
from mailwright.queue.admin import (
    BOUNCE_REASON,
    HOLD_REASON,
    Actor,
    AdminResult,
    Selection,
)
from mailwright.queue.backend import (
    describe,
    exists,
    migrate_schema,
    queue_store,
    schema_versions,
)
from mailwright.queue.store import NewerSchemaError, QueueStore, StoredMessage, StoreError
from mailwright.queue.writer import QueueWriter

# what other modules take from here (``flush_queue`` for sendmail -q, ``cli.queue_mode``)
__all__ = ["administer", "flush_queue", "queue"]


def daemon_running(settings: Settings) -> bool:
    answer = control.request(settings.queue.directory, "ping", timeout=5)
    return bool(answer and answer.get("ok"))


def wake_daemon(settings: Settings, op: str = "wake", **args: Any) -> bool:
    """Tell a running daemon the queue changed (``wake``) or to deliver now (``flush``,
    with ``queue_ids`` for a selective run)."""
    answer = control.request(settings.queue.directory, op, timeout=5, **args)
    return bool(answer and answer.get("ok"))


@contextmanager
def reading(settings: Settings) -> Iterator[QueueStore]:
    store = queue_store(settings.queue)
    try:
        store.open_for_reading()
    except StoreError as exc:
        fail(str(exc), ExitCode.NOINPUT)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def writing(settings: Settings) -> Iterator[tuple[QueueStore, QueueWriter]]:
    if not exists(settings.queue):
        fail(f"no queue at {describe(settings.queue)}", ExitCode.NOINPUT)
    store = queue_store(settings.queue)
    try:
        store.open(recover=False)
    except StoreError as exc:
        fail(str(exc), ExitCode.TEMPFAIL)
    writer = QueueWriter(store)
    writer.start()
    try:
        yield store, writer
    finally:
        writer.stop()
        store.close()


@click.group()
def queue() -> None:
    """Inspect and steer the mail queue.

    \b
    Examples:
      mailwright queue list
      mailwright queue show 01JD3K7Q2M4XK9A
      mailwright queue flush --recipient example.org
      mailwright queue hold 01JD3K7Q2M4XK9A --reason "spam?"
    """


@queue.command("list")
@click.option("--json", "as_json_", is_flag=True, help="JSON for scripts.")
@click.pass_context
def list_(ctx: click.Context, as_json_: bool) -> None:
    """List queued messages (Sendmail's mailq layout; a table on a terminal)."""
    settings = load_or_exit(ctx)
    with reading(settings) as store:
        messages = store.list_messages()
    if as_json_:
        print_json([as_json(m) for m in messages])
    elif is_terminal():
        table(
            f"{settings.queue.directory}: {len(messages)} messages",
            ["Queue ID", "Size", "Arrived", "Sender", "Waiting for", "Status"],
            (
                (
                    m.queue_id,
                    m.size,
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(m.received_at)),
                    f"<{m.envelope.sender_text}>",
                    ", ".join(r.address for r in m.recipients if r.state.value == "queued"),
                    _short_status(m),
                )
                for m in messages
            ),
        )
    else:
        click.echo(format_queue(settings.queue.directory, messages), nl=False)


def _short_status(m: StoredMessage) -> str:
    from mailwright.queue.admin import status_text

    return status_text(m) or "queued"


@queue.command()
@click.argument("queue_id")
@click.option("--json", "as_json_", is_flag=True, help="JSON for scripts.")
@click.pass_context
def show(ctx: click.Context, queue_id: str, as_json_: bool) -> None:
    """Show one message: envelope, recipients with their state, headers."""
    settings = load_or_exit(ctx)
    with reading(settings) as store:
        message = store.get_message(queue_id.upper())
        if message is None:
            fail(f"{queue_id}: no such message in the queue", ExitCode.NOINPUT)
        assert message is not None
        headers = store.read_headers(message.queue_id)
    data = as_json(message)
    if as_json_:
        data["headers"] = [[h.name, h.text] for h in headers]
        print_json(data)
        return
    click.echo(f"Queue ID:   {message.queue_id}")
    click.echo(
        f"State:      {message.state.value}"
        + (f" ({message.hold_reason})" if message.hold_reason else "")
    )
    click.echo(f"Arrived:    {time.ctime(message.received_at)}")
    click.echo(f"Size:       {message.size}")
    click.echo(f"Sender:     <{message.envelope.sender_text}>")
    click.echo(
        f"Origin:     {message.origin.protocol} from {message.origin.client_address or 'local'}"
        f" helo={message.origin.helo or '-'}"
    )
    env = message.envelope.params
    click.echo(f"DSN:        RET={env.ret.value if env.ret else '-'} ENVID={env.envid or '-'}")
    click.echo("Recipients:")
    for r in message.recipients:
        line = f"  <{r.address}> {r.state.value}, {r.attempts} attempt(s)"
        if r.target is not None:
            line += f", to {r.target.mailer.log_name} {r.target}"
        if r.state.value == "queued" and r.attempts:
            line += f", next {time.ctime(r.next_attempt)}"
        click.echo(line)
        if r.last_reply:
            click.echo(last_reply_text(r.last_status, r.last_reply, r.remote_mta))
    click.echo("Headers:")
    for h in headers:
        click.echo(
            "  " + h.encode().decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n  ")
        )


def last_reply_text(status: str | None, reply: str, remote_mta: str | None) -> str:
    """``      last: 5.1.1 text (mta)``; each further line of a multi-line reply starts
    under the first one's text, so the listing keeps its indentation."""
    head = f"      last: {status} " if status else "      last: "
    lines = [line.rstrip("\r") for line in reply.splitlines()] or [""]
    if remote_mta:
        lines[-1] += f" ({remote_mta})"
    return head + ("\n" + " " * len(head)).join(lines)


F = TypeVar("F", bound=Callable[..., Any])


def _selection_options(f: F) -> F:
    f = click.argument("ids", nargs=-1)(f)
    f = click.option("--id", "id_contains", help="Queue ids containing this (-qI).")(f)
    f = click.option("--recipient", help="A recipient containing this (-qR).")(f)
    f = click.option("--sender", help="The sender containing this (-qS).")(f)
    return f


@queue.command()
@_selection_options
@click.pass_context
def flush(
    ctx: click.Context,
    ids: tuple[str, ...],
    id_contains: str | None,
    recipient: str | None,
    sender: str | None,
) -> None:
    """Try queued messages now (all, or those selected), like sendmail -q.

    \b
    Examples:
      mailwright queue flush
      mailwright queue flush --recipient @example.org
    """
    settings = load_or_exit(ctx)
    selection = Selection(tuple(i.upper() for i in ids), id_contains, recipient, sender)
    result = administer(settings, "flush", selection)
    click.echo(f"{result.scheduled} recipient(s) scheduled for delivery")
    for queue_id in result.held:
        click.echo(
            f"{queue_id}: on hold, not scheduled (mailwright queue release {queue_id} first)"
        )
    if result.missing:
        click.echo(f"not in the queue: {', '.join(result.missing)}", err=True)


def flush_queue(settings: Settings, selection: Selection, foreground: bool = True) -> int:
    """One queue run, like ``sendmail -q``: make the selected recipients due now (never
    those of held messages), then have the daemon deliver them (a selective run delivers
    only the selected messages, even in queue-only mode), or, without a daemon, deliver
    them here (with ``foreground``). The daemon does the writing when it runs (the
    control socket's ``admin`` flush, logged ``via=sendmail -q``)."""
    return administer(settings, "flush", selection, via=SENDMAIL_VIA, run_here=foreground).scheduled


# ---- hold, release, delete, bounce, flush: through the daemon, or here -------------------------
VIA = "mailwright queue"
SENDMAIL_VIA = "sendmail -q"
ADMIN_TIMEOUT = 300.0  # a bounce of many messages builds many reports


def administer(
    settings: Settings,
    action: str,
    selection: Selection,
    reason: str = "",
    via: str = VIA,
    run_here: bool = True,
) -> AdminResult:
    """Have the running daemon do ``action`` (it logs and counts it), or, when none
    answers, do it in this process (logged where ``[log]`` says, as the daemon would),
    holding the queue lock meanwhile; a flush then runs the queue here (``run_here``)."""
    answer = control.request(
        settings.queue.directory,
        "admin",
        timeout=ADMIN_TIMEOUT,
        action=action,
        selection=selection.as_json(),
        reason=reason,
        via=via,
    )
    if answer and answer.get("ok") and isinstance(answer.get("result"), dict):
        return AdminResult.from_json(answer["result"])
    if answer is not None and answer.get("error") != "bad request":
        # the daemon tried and failed: doing it here as well could do it twice
        fail(f"the daemon could not {action}: {answer.get('error')}", ExitCode.TEMPFAIL)
    # no daemon, or one from before the admin request (it still takes wake and flush)
    from mailwright.config.loader import ConfigError
    from mailwright.observability import logtargets

    try:
        logtargets.configure(settings.log)
    except ConfigError as exc:  # e.g. a log file only the daemon's user may write
        click.echo(f"mailwright: warning: {exc}: this action is not logged", err=True)
    actor = Actor.from_uid(os.getuid(), via)
    # a daemon that answered (one from before the admin request) keeps the queue lock
    with queue_locked(settings, answer is None):
        return asyncio.run(_administer_here(settings, action, selection, reason, actor, run_here))


@contextmanager
def queue_locked(settings: Settings, lock: bool = True) -> Iterator[None]:
    """Hold the queue's master lock (``daemon.queuelock``) while this process writes the
    queue without a daemon: no daemon starts meanwhile, and a daemon that runs but did
    not answer the control socket is never written beside."""
    if not lock:
        yield
        return
    queue_lock = QueueLock(settings.queue.directory)
    try:
        queue_lock.acquire()
    except QueueBusyError:
        fail(
            f"{settings.queue.directory}: the daemon holds the queue but did not answer"
            " its control socket; try again",
            ExitCode.TEMPFAIL,
        )
    except OSError as exc:
        fail(f"cannot lock the queue: {exc}", ExitCode.TEMPFAIL)
    try:
        yield
    finally:
        queue_lock.release()


async def _administer_here(
    settings: Settings,
    action: str,
    selection: Selection,
    reason: str,
    actor: Actor,
    run_here: bool = True,
) -> AdminResult:
    """No daemon answered: this process's own store, writer (and, for a bounce, scheduler);
    a daemon that answers a plain ``wake``/``flush`` is told; none: a flush runs here."""
    from mailwright.daemon.delivery import build_scheduler, run_queue_once

    asked: list[tuple[str, dict[str, Any]]] = []

    async def notify(op: str, args: dict[str, Any]) -> None:
        asked.append((op, args))

    with writing(settings) as (store, writer):
        scheduler = build_scheduler(settings, store, writer) if action == "bounce" else None
        admin = Admin(store, writer, notify, scheduler.bounce if scheduler else None)
        try:
            result = await admin.act(action, selection, actor, reason)
        finally:
            if scheduler is not None:
                await scheduler.stop(grace=5)
    for op, args in asked:
        if not wake_daemon(settings, op, **args) and op == "flush" and run_here:
            await run_queue_once(settings, args.get("queue_ids"))
    return result


def _for_each(
    ctx: click.Context, ids: tuple[str, ...], label: str, action: str, reason: str = ""
) -> None:
    settings = load_or_exit(ctx)
    if not ids:
        fail("name at least one queue id", ExitCode.USAGE)
    result = administer(settings, action, Selection(tuple(i.upper() for i in ids)), reason)
    click.echo(f"{label}: {len(result.done)} message(s)")
    if result.missing:
        fail(f"not in the queue: {', '.join(result.missing)}", ExitCode.NOINPUT)


@queue.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--reason", default=HOLD_REASON, show_default=True)
@click.pass_context
def hold(ctx: click.Context, ids: tuple[str, ...], reason: str) -> None:
    """Put messages on hold: they stay queued but are not delivered."""
    _for_each(ctx, ids, "held", "hold", reason)


@queue.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def release(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Release held (or quarantined) messages."""
    _for_each(ctx, ids, "released", "release")


@queue.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Delete every message in the queue.")
@click.pass_context
def delete(ctx: click.Context, ids: tuple[str, ...], all_: bool) -> None:
    """Delete messages without delivering or bouncing them."""
    if all_:
        settings = load_or_exit(ctx)
        with reading(settings) as store:
            ids = tuple(m.queue_id for m in store.list_messages())
        if not ids:
            click.echo("deleted: 0 message(s)")
            return
    _for_each(ctx, ids, "deleted", "delete")


@queue.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--reason", default=BOUNCE_REASON, show_default=True)
@click.pass_context
def bounce(ctx: click.Context, ids: tuple[str, ...], reason: str) -> None:
    """Fail every waiting recipient of messages now, sending the sender a bounce."""
    _for_each(ctx, ids, "bounced", "bounce", reason)


@queue.command()
@click.option("--check", is_flag=True, help="Exit 1 when migrations are pending; change nothing.")
@click.pass_context
def migrate(ctx: click.Context, check: bool) -> None:
    """Apply the queue store's pending schema migrations (the daemon also does at start).

    \b
    Examples:
      mailwright queue migrate --check
      mailwright queue migrate
    """
    settings = load_or_exit(ctx)
    where = describe(settings.queue)
    try:
        versions = schema_versions(settings.queue)
    except StoreError as exc:
        fail(str(exc), ExitCode.CONFIG if isinstance(exc, NewerSchemaError) else ExitCode.TEMPFAIL)
    if not versions.pending:
        click.echo(f"{where}: schema version {versions.stored}, up to date")
        return
    if settings.queue.backend == "sqlite" and not settings.queue.database.exists():
        click.echo(f"{where}: no queue yet (the daemon creates it at version {versions.program})")
        return
    if check:
        click.echo(
            f"{where}: schema version {versions.stored}, this program's {versions.program}:"
            " migrations pending (mailwright queue migrate)"
        )
        ctx.exit(1)
    with queue_locked(settings, settings.queue.backend == "sqlite"):
        try:
            before = migrate_schema(settings.queue)
        except StoreError as exc:
            fail(
                str(exc),
                ExitCode.CONFIG if isinstance(exc, NewerSchemaError) else ExitCode.TEMPFAIL,
            )
    if before.pending:
        click.echo(f"{where}: migrated from schema version {before.stored} to {before.program}")
    else:  # another node or process migrated meanwhile
        click.echo(f"{where}: schema version {before.stored}, up to date")
