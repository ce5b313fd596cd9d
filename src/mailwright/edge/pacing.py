"""Timing defences of a session: the greet pause and the deadline for a whole command line.

``early_input`` waits ``server.greet_pause`` seconds before the greeting and
returns whatever the client sent meanwhile; an SMTP client must wait for the
``220``, so such a client is a bulk sender and the protocol core refuses it
(``554 5.5.0``). ``CommandClock`` gives every command line one deadline,
``server.timeouts.command`` after the previous line was complete, however many
reads it takes: a client that sends a byte at a time (slowloris) is dropped at
that deadline instead of holding a connection slot for ever. Reads no settings
itself; the session passes the durations.
"""

from __future__ import annotations

import asyncio


async def early_input(reader: asyncio.StreamReader, pause: float) -> bytes:
    """What arrives within ``pause`` seconds (b"" if nothing, or the client left)."""
    if pause <= 0:
        return b""
    try:
        async with asyncio.timeout(pause):
            return await reader.read(4096)
    except TimeoutError:
        return b""


class CommandClock:
    """The deadline of the command line being received (monotonic loop time)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = 0.0

    def before_read(self, partial: bool) -> float:
        """The deadline for the next read: a new line starts a new clock."""
        if not partial:
            self.deadline = asyncio.get_running_loop().time() + self.timeout
        return self.deadline
