"""Encoding outgoing message content for DATA and BDAT, streaming, chunk by chunk.

``LineEndings`` turns every bare CR and bare LF into CRLF (the same result as
``smtp.data.normalize_line_endings`` on the whole message, whatever the chunk
boundaries), so the client never emits a bare line end (RFC 5321 2.3.8, the
SMTP smuggling class of bugs). ``DotStuffer`` adds the RFC 5321 4.5.2
transparency dots and the end marker: its output for a message split into any
chunks equals ``smtp.data.dot_stuff`` of the normalised message. Neither ever
holds more than one chunk plus a carried CR. Trusts nothing about the content.
Reads no settings.
"""

from __future__ import annotations

import re

from mailwright.smtp.data import normalize_line_endings

_DOT_LINE = re.compile(rb"\r\n\.")  # a line that starts with a dot (see smtp.data)


def crlf_only(data: bytes) -> bool:
    """Whether every line break in ``data`` is a CRLF (a final CR counts as bare).

    ``splitlines`` breaks at CRLF, CR and LF alike: the breaks are all CRLF exactly when
    they take two octets each. About four times as fast as normalising a clean chunk
    (which copies it three times), and queued mail is almost always clean.
    """
    lines = data.splitlines()
    breaks = len(lines) if data.endswith((b"\n", b"\r")) else max(len(lines) - 1, 0)
    return len(data) - sum(map(len, lines)) == 2 * breaks


class LineEndings:
    """Streaming CRLF normalisation; a CR at a chunk's end waits for the next chunk."""

    def __init__(self) -> None:
        self._carried_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if self._carried_cr:
            chunk = b"\r" + chunk
            self._carried_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._carried_cr = True
        if crlf_only(chunk):
            return chunk
        return normalize_line_endings(chunk)

    def finish(self) -> bytes:
        """A CR left at the very end is a line end of its own."""
        if self._carried_cr:
            self._carried_cr = False
            return b"\r\n"
        return b""


class DotStuffer:
    """Streaming DATA encoding: CRLF normalisation, dot-stuffing, the final CRLF.CRLF."""

    def __init__(self) -> None:
        self._lines = LineEndings()
        self._at_line_start = True
        self._empty = True

    def feed(self, chunk: bytes) -> bytes:
        return self._stuff(self._lines.feed(chunk))

    def finish(self) -> bytes:
        """The rest of the content, a CRLF if the content did not end with one, and ``.CRLF``."""
        tail = self._stuff(self._lines.finish())
        if not self._empty and not self._at_line_start:
            tail += b"\r\n"
        return tail + b".\r\n"

    def _stuff(self, data: bytes) -> bytes:
        if not data:
            return data
        self._empty = False
        # the regex finds "no dotted line" about twice as fast as replace looks for one
        stuffed = data.replace(b"\r\n.", b"\r\n..") if _DOT_LINE.search(data) else data
        if self._at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        # normalised data never ends inside a CRLF: a trailing LF is a complete line end
        self._at_line_start = data.endswith(b"\n")
        return stuffed
