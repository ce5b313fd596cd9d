"""The delivery mode a local submission asks for (``sendmail -odq``, ``-odi``).

Sendmail's ``-odb`` (background, the default) needs nothing. ``-odq`` / ``-odd`` (queue
only: no attempt before the next queue run) and ``-odi`` (interactive: ``sendmail``
returns once a delivery attempt finished) travel from ``sendmail`` to the daemon in one
header field, ``X-Mailwright-Delivery-Mode: queue|interactive``, which ``sendmail``
appends to the message and the daemon removes before the message is queued. The daemon
honours it only for local submissions (the local socket and the maildrop, whose user the
kernel vouches for): it changes nothing but when that user's own message is first tried.
From other clients the field is left alone. Standard library only (the ``sendmail``
path); reads no settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailwright.core.headers import HeaderList

FIELD = "X-Mailwright-Delivery-Mode"
QUEUE = "queue"  # -odq, -odd: wait for the next queue run
INTERACTIVE = "interactive"  # -odi: deliver now, the submitter waits for the attempt
MODES = (QUEUE, INTERACTIVE)


def take(headers: HeaderList) -> str | None:
    """Remove every ``X-Mailwright-Delivery-Mode`` field; the mode the last one asked
    for (None: background, or a value that means nothing here)."""
    found = [h for h in headers if h.is_(FIELD)]
    if not found:
        return None
    headers[:] = [h for h in headers if not h.is_(FIELD)]
    value = found[-1].text.lower()
    return value if value in MODES else None
