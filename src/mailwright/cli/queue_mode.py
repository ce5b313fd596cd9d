"""The queue side of ``sendmail``: ``-bp`` / ``mailq`` and ``-q`` queue runs.

``-bp`` prints Sendmail's ``mailq`` layout for the queue, then, when the caller may list
it (root), the messages still waiting in the maildrop. ``-q`` makes the queued
recipients due now (all, or those selected by ``-qI``/``-qR``/``-qS`` substrings) and
has a running daemon deliver them, or delivers them itself in the foreground when none
runs, through ``cli.queue.flush_queue``; ``-q30m`` without ``-bd`` repeats
that every 30 minutes in the foreground until SIGTERM. Settings: ``queue.directory`` (and
for ``-q``, or ``-bp`` with ``queue.backend = "postgresql"``, the full settings).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from mailwright.cli.invocation import Invocation
from mailwright.config.lite import SubmitConfig

if TYPE_CHECKING:
    from mailwright.queue.store import StoredMessage

OK, CONFIG, NOPERM, IOERR = 0, 78, 77, 74


def say(message: str) -> None:
    sys.stderr.write(f"mailwright: {message}\n")


# ---- -bp / mailq --------------------------------------------------------------------------------
def print_queue(config: SubmitConfig, count_only: bool = False) -> int:
    from mailwright.cli.mailq import format_queue

    queue_dir = Path(os.path.abspath(config.queue_dir))  # shown normalised: no ./var/../
    messages = _stored_messages(config, queue_dir)
    if isinstance(messages, int):
        return messages
    dropped = maildrop_lines(config.maildrop_dir)
    if count_only:
        print(f"{queue_dir}: entries={len(messages)}")
        if dropped:
            print(f"{os.path.abspath(config.maildrop_dir)}: entries={len(dropped)}")
        return OK
    sys.stdout.write(format_queue(queue_dir, messages))
    if dropped:
        sys.stdout.write(_maildrop_section(config.maildrop_dir, dropped))
    sys.stdout.flush()
    return OK


def _stored_messages(config: SubmitConfig, queue_dir: Path) -> list[StoredMessage] | int:
    """The queued messages, or the exit code when they cannot be read."""
    from mailwright.queue.store import StoreError

    if config.queue_backend != "sqlite":  # a database: its settings need the full schema
        return _database_messages(config)
    from mailwright.queue.sqlite import SqliteQueueStore

    database = queue_dir / "queue.db"
    if not os.path.lexists(database):
        return []
    if not os.access(database, os.R_OK):
        say(f"cannot read the queue {database}: permission denied (run mailq as root)")
        return NOPERM
    store = SqliteQueueStore(database)
    try:
        store.open_for_reading()
        return store.list_messages()
    except StoreError as exc:
        say(str(exc))
        return IOERR
    finally:
        store.close()


def _database_messages(config: SubmitConfig) -> list[StoredMessage] | int:
    from mailwright.config.loader import ConfigError, load_settings
    from mailwright.queue.backend import queue_store
    from mailwright.queue.store import StoreError

    try:
        settings = load_settings(config.path)
    except ConfigError as exc:
        say(str(exc))
        return CONFIG
    store = queue_store(settings.queue)
    try:
        store.open_for_reading()
        return store.list_messages()
    except StoreError as exc:
        say(str(exc))
        return IOERR
    finally:
        store.close()


def maildrop_lines(directory: str) -> list[list[str]]:
    """One block of lines per complete maildrop file this user may read (root: all)."""
    from mailwright.queue import maildrop

    blocks = []
    try:
        paths = maildrop.pending(directory)
    except PermissionError:
        return []
    for path in paths:
        try:
            entry = maildrop.open_entry(path)
        except (OSError, maildrop.MaildropError):
            continue
        with entry:
            when = time.strftime("%a %b %d %H:%M", time.localtime(entry.mtime))
            lines = [
                f"{entry.name} {entry.size:8d} {when} <{entry.envelope.sender}>",
                "                 (waiting in the maildrop for the daemon)",
            ]
            lines += [f"\t\t\t\t\t <{r.address}>" for r in entry.envelope.recipients]
        blocks.append(lines)
    return blocks


def _maildrop_section(directory: str, blocks: list[list[str]]) -> str:
    from mailwright.cli.mailq import HEADER

    n = len(blocks)
    lines = [f"\t\t{os.path.abspath(directory)} ({n} request{'s' if n != 1 else ''})", HEADER]
    for block in blocks:
        lines += block
    lines.append(f"\t\tTotal requests: {n}")
    return "\n".join(lines) + "\n"


# ---- -q ---------------------------------------------------------------------------------------
def run_queue(inv: Invocation) -> int:
    from mailwright.config.loader import ConfigError, load_settings
    from mailwright.queue.admin import Selection

    try:
        settings = load_settings(inv.config)
    except ConfigError as exc:
        say(str(exc))
        return CONFIG
    run = inv.queue_run
    assert run is not None
    selection = Selection((), run.id_contains, run.recipient, run.sender)
    if run.interval is None:
        _run_once(settings, selection, inv.verbose)
        return OK
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.is_set():
        _run_once(settings, selection, inv.verbose)
        stop.wait(run.interval)
    return OK


def _run_once(settings: object, selection: object, verbose: bool) -> None:
    """Make the selection due; a running daemon delivers it, otherwise this process does."""
    from mailwright.cli.queue import flush_queue
    from mailwright.config.schema import Settings
    from mailwright.queue.admin import Selection

    assert isinstance(settings, Settings) and isinstance(selection, Selection)
    count = flush_queue(settings, selection)
    if verbose:
        print(f"queue run: {count} recipient(s) due now", flush=True)
