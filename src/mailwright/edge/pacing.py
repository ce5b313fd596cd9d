"""Timing defences of a session: the greet pause and the deadline for a whole command line.

``early_input`` waits ``server.greet_pause`` seconds before the greeting and
returns whatever the client sent meanwhile; an SMTP client must wait for the
``220``, so such a client is a bulk sender and the protocol core refuses it
(``554 5.5.0``). ``CommandClock`` gives every command line one deadline,
``server.timeouts.command`` after the previous line was complete, however many
reads it takes: a client that sends a byte at a time (slowloris) is dropped at
that deadline instead of holding a connection slot for ever. ``DataClock`` does
the same for message content (Postfix 3.7's ``smtpd_per_request_deadline`` with
``smtpd_min_data_rate``): a DATA or BDAT request gets ``server.timeouts.data_block``
seconds, and every octet received adds 1/``server.min_data_rate`` seconds, so a
client dripping bytes is dropped however steadily it drips (the session treats a
message in BDAT chunks as one request, first chunk to LAST). The credit never runs
more than ``data_block`` ahead of now: a fast start does not buy a long stall
afterwards, and no read may wait longer than before. Reads no settings itself; the
session passes the durations.
"""

from __future__ import annotations

import asyncio

from mailwright.edge.stream import SessionStream


async def early_input(reader: SessionStream, pause: float) -> bytes:
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

    def before_read(self, partial: bool, now: float) -> float:
        """The deadline for the next read (``now``: loop time): a new line starts a new clock."""
        if not partial:
            self.deadline = now + self.timeout
        return self.deadline


class DataClock:
    """The deadline of the DATA/BDAT request being received (monotonic loop time)."""

    def __init__(self, timeout: float, min_rate: int) -> None:
        self.timeout = timeout
        self.min_rate = min_rate  # octets per second; 0: a per-read timeout only
        self.deadline: float | None = None  # None: no content request in progress
        self.received = 0  # octets of content read in this request

    def before_read(self, now: float) -> float:
        """The deadline for the next read of content; the first read starts the clock."""
        if self.deadline is None or not self.min_rate:
            if self.deadline is None:
                self.received = 0
            self.deadline = now + self.timeout
        return self.deadline

    def after_read(self, octets: int, now: float) -> None:
        """``octets`` arrived: extend the deadline by what they are worth at the minimum rate."""
        self.received += octets
        if self.min_rate and self.deadline is not None:
            self.deadline = min(self.deadline + octets / self.min_rate, now + self.timeout)

    def stop(self) -> None:
        """The request is over (back to command lines)."""
        self.deadline = None
