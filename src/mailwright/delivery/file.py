"""Delivery to a file (``/path`` in aliases and ``.forward``): an mbox append.

Same format and locking as a mailbox (``delivery.mbox``): flock, and the
``<path>.lock`` dot-lock when the directory lets the writer create one (otherwise
flock alone, as Sendmail's file mailer does), truncation back on failure. The file
is created (0600) if missing. Writing to an executable file is refused (5.7.1); a
file the writer may not open fails at once (550 5.2.0, as Postfix's and Sendmail's
file delivery do, and as a program that cannot write fails);
``/dev/null`` is accepted and discards the message. When we are root the write
happens as the controlling user, in a child process (``delivery.privileged``), so
a file can only be written by someone allowed to write it. Reads no settings
(the caller passes ``MboxOptions``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from mailwright.core.reply import Reply
from mailwright.delivery import lockwait, mbox
from mailwright.delivery.privileged import Identity, write_as
from mailwright.delivery.workers import WRITES, Interrupts

DEV_NULL = Path("/dev/null")


async def deliver(
    path: Path,
    pieces: Callable[[], Iterator[bytes]],
    options: mbox.MboxOptions,
    who: Identity | None,
    interrupts: Interrupts | None = None,
) -> Reply | None:
    """Append the message (``pieces``: mbox-formatted) to ``path``; None when delivered.
    ``interrupts`` ends a wait for the file's locks (shutdown)."""
    interrupts = interrupts or Interrupts()
    if path == DEV_NULL:
        await WRITES.run(_drain, pieces)
        return None
    options = replace(
        options,
        dotlock_required=False,
        refuse_executable=True,
        denied_is_permanent=True,
        owner=None,
    )
    if who is not None:
        command = [
            "mbox",
            str(path),
            "--no-dotlock-required",
            "--refuse-executable",
            "--denied-is-permanent",
            "--size-limit",
            str(options.size_limit),
            "--lock-timeout",
            str(options.lock_timeout),
            "--stale-lock-age",
            str(options.stale_lock_age),
        ]
        return await write_as(who, command, pieces, options.lock_timeout + 60, interrupts)
    try:
        await lockwait.append(path, pieces, options, interrupts)
    except mbox.MailboxError as exc:
        return exc.reply
    return None


def _drain(pieces: Callable[[], Iterator[bytes]]) -> None:
    for _ in pieces():
        pass
