"""``mailwright queue ...``: list, show, flush, hold, release, delete and bounce messages.

Works whether or not the daemon runs: changes go through the same store
operations (the single writer code path), then a running daemon is woken over
its control socket; without a daemon, ``flush`` runs the queue itself in the
foreground, like ``sendmail -q``. Settings: ``queue.directory`` and, for a
foreground run, everything delivery reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from mailwright.cli.mailq import as_json, format_queue
from mailwright.cli.output import fail, is_terminal, print_json, progress, table
from mailwright.config.schema import Settings
from mailwright.core.reply import Reply
from mailwright.core.sysexits import ExitCode
from mailwright.daemon import control
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import (
    DeleteMessage,
    HoldMessage,
    Op,
    QueueStore,
    ReleaseMessage,
    RescheduleNow,
    StoredMessage,
    StoreError,
)
from mailwright.queue.writer import QueueWriter


def _settings(ctx: click.Context) -> Settings:
    from mailwright.cli.main import load_or_exit

    return load_or_exit(ctx)


@dataclass
class Selection:
    ids: tuple[str, ...] = ()
    id_contains: str | None = None
    recipient: str | None = None
    sender: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.ids or self.id_contains or self.recipient or self.sender)

    def matches(self, m: StoredMessage) -> bool:
        if self.ids and m.queue_id not in self.ids:
            return False
        if self.id_contains and self.id_contains.upper() not in m.queue_id:
            return False
        if self.sender and self.sender.lower() not in m.envelope.sender_text.lower():
            return False
        return not self.recipient or any(
            self.recipient.lower() in r.address.lower() for r in m.recipients
        )


def daemon_running(settings: Settings) -> bool:
    answer = control.request(settings.queue.directory, "ping", timeout=5)
    return bool(answer and answer.get("ok"))


def wake_daemon(settings: Settings, op: str = "wake", **args: Any) -> bool:
    """Tell a running daemon the queue changed (``wake``) or to deliver now (``flush``,
    with ``queue_ids`` for a selective run)."""
    answer = control.request(settings.queue.directory, op, timeout=5, **args)
    return bool(answer and answer.get("ok"))


@contextmanager
def reading(settings: Settings) -> Iterator[SqliteQueueStore]:
    store = SqliteQueueStore(settings.queue.database)
    try:
        store.open_for_reading()
    except StoreError as exc:
        fail(str(exc), ExitCode.NOINPUT)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def writing(settings: Settings) -> Iterator[tuple[SqliteQueueStore, QueueWriter]]:
    if not settings.queue.database.exists():
        fail(f"no queue at {settings.queue.database}", ExitCode.NOINPUT)
    store = SqliteQueueStore(settings.queue.database)
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


def selected(store: QueueStore, selection: Selection) -> list[StoredMessage]:
    messages = store.list_messages()
    return [m for m in messages if selection.matches(m)]


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
    settings = _settings(ctx)
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
    from mailwright.cli.mailq import status_text

    return status_text(m) or "queued"


@queue.command()
@click.argument("queue_id")
@click.option("--json", "as_json_", is_flag=True, help="JSON for scripts.")
@click.pass_context
def show(ctx: click.Context, queue_id: str, as_json_: bool) -> None:
    """Show one message: envelope, recipients with their state, headers."""
    settings = _settings(ctx)
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
            click.echo(
                f"      last: {r.last_status or ''} {r.last_reply}"
                + (f" ({r.remote_mta})" if r.remote_mta else "")
            )
    click.echo("Headers:")
    for h in headers:
        click.echo(
            "  " + h.encode().decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n  ")
        )


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
    settings = _settings(ctx)
    selection = Selection(tuple(i.upper() for i in ids), id_contains, recipient, sender)
    count = flush_queue(settings, selection)
    click.echo(f"{count} recipient(s) scheduled for delivery")


def flush_operation(store: QueueStore, selection: Selection, now: float) -> RescheduleNow | None:
    """The store operation of ``queue flush`` (and the status page's Flush): every queued
    recipient, or those of the selected messages; None when nothing is selected."""
    if selection.empty:
        return RescheduleNow(now)
    ids = [m.queue_id for m in selected(store, selection)]
    return RescheduleNow(now, queue_ids=ids) if ids else None


def flush_request(op: RescheduleNow | None) -> dict[str, Any]:
    """The arguments of the control socket's ``flush`` for ``op``: none for a full run,
    ``queue_ids`` for a selective one (only those messages; none when nothing matched)."""
    if op is not None and op.queue_ids is None:
        return {}
    return {"queue_ids": list(op.queue_ids or ()) if op is not None else []}


def flush_queue(settings: Settings, selection: Selection, foreground: bool = True) -> int:
    """One queue run, like ``sendmail -q``: make the selected recipients due now, then
    have the daemon deliver them (a selective run delivers only the selected messages,
    even in queue-only mode), or, without a daemon, deliver them here."""
    with writing(settings) as (store, writer):
        op = flush_operation(store, selection, time.time())
        count = writer.execute_sync(op) if op is not None else 0
    args = flush_request(op)
    if wake_daemon(settings, "flush", **args) or not foreground:
        return count
    from mailwright.daemon.delivery import run_queue_once

    asyncio.run(run_queue_once(settings, args.get("queue_ids")))
    return count


HOLD_REASON = "held by administrator"


def admin_operation(action: str, reason: str = HOLD_REASON) -> Callable[[str], Op[bool]]:
    """The store operation of ``queue hold``, ``release`` or ``delete`` for one queue id
    (the status page's buttons build theirs here too)."""
    if action == "hold":
        return lambda queue_id: HoldMessage(queue_id, reason)
    if action == "release":
        return ReleaseMessage
    if action == "delete":
        return DeleteMessage
    raise ValueError(f"unknown queue action {action!r}")


def _for_each(
    ctx: click.Context, ids: tuple[str, ...], label: str, action: str, reason: str = HOLD_REASON
) -> None:
    settings = _settings(ctx)
    if not ids:
        fail("name at least one queue id", ExitCode.USAGE)
    make_op = admin_operation(action, reason)
    missing = []
    with writing(settings) as (_, writer), progress([i.upper() for i in ids], label) as items:
        for qid in items:
            if not writer.execute_sync(make_op(qid)):
                missing.append(qid)
    wake_daemon(settings)
    done = len(ids) - len(missing)
    click.echo(f"{label}: {done} message(s)")
    if missing:
        fail(f"not in the queue: {', '.join(missing)}", ExitCode.NOINPUT)


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
        settings = _settings(ctx)
        with reading(settings) as store:
            ids = tuple(m.queue_id for m in store.list_messages())
        if not ids:
            click.echo("deleted: 0 message(s)")
            return
    _for_each(ctx, ids, "deleted", "delete")


@queue.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--reason", default="Message bounced by administrator", show_default=True)
@click.pass_context
def bounce(ctx: click.Context, ids: tuple[str, ...], reason: str) -> None:
    """Fail every waiting recipient of messages now, sending the sender a bounce."""
    settings = _settings(ctx)
    from mailwright.daemon.delivery import bounce_messages

    reply = Reply.of(550, "5.0.0", reason)
    missing = asyncio.run(bounce_messages(settings, [i.upper() for i in ids], reply))
    wake_daemon(settings)
    click.echo(f"bounced: {len(ids) - len(missing)} message(s)")
    if missing:
        fail(f"not in the queue: {', '.join(missing)}", ExitCode.NOINPUT)
