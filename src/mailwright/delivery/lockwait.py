"""Waiting for an mbox mailbox's (or file's) locks without holding a thread.

``append`` runs ``delivery.mbox.append`` in the delivery pool (``workers.WRITES``)
with a short lock timeout (``ATTEMPT``); while the mailbox stays locked it waits in
the event loop between attempts (``PAUSE``), up to the configured ``lock_timeout``,
and gives up at once on ``Interrupts.interrupt`` (shutdown) with 451 4.2.0. So
deliveries waiting for locked mailboxes hold a thread only for their short attempts,
and any number of locked mailboxes cannot take the pool from the others. The rules
for breaking stale locks are ``delivery.mbox``'s (they go by the lock's age and
holder, not by the attempts). Reads no settings (the caller passes ``MboxOptions``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from mailwright.core.reply import Reply
from mailwright.delivery import mbox
from mailwright.delivery.workers import WRITES, Interrupts

log = logging.getLogger("mailwright.delivery")

ATTEMPT = 0.25  # seconds one attempt may wait for the locks in a thread
PAUSE = 0.25  # seconds between attempts, in the event loop


async def append(
    path: Path,
    pieces: Callable[[], Iterable[bytes]],
    options: mbox.MboxOptions,
    interrupts: Interrupts,
) -> int:
    """``mbox.append(path, pieces(), options)``, waiting for the locks as described
    above; raises ``mbox.MailboxError`` like it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.lock_timeout
    attempt = replace(options, lock_timeout=min(ATTEMPT, options.lock_timeout))
    waited = False
    while True:
        try:
            return await interrupts.run(WRITES, mbox.append, path, pieces(), attempt)
        except mbox.MailboxLockedError:
            left = deadline - loop.time()
            if left <= 0:
                raise
            if not waited:
                log.debug("%s is locked; waiting up to %gs", path, options.lock_timeout)
                waited = True
        await asyncio.sleep(min(PAUSE, left))
        if interrupts.interrupted:
            raise mbox.MailboxError(
                Reply.of(451, "4.2.0", f"Mailbox {path} is locked; stopped waiting")
            )
