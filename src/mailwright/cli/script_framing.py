"""``sendmail -bs`` input as people and scripts type it, made into exact SMTP framing.

Sendmail's ``-bs`` is a local, trusted channel: ``printf 'HELO x\\nMAIL FROM:...' |
sendmail -bs`` has worked for decades. The protocol core demands CRLF everywhere (a bare
LF is an error in a command and never ends DATA: SMTP smuggling), so this channel turns
every LF or CRLF line end into CRLF before the core sees it; a lone ``.`` line, however
it ends, still ends DATA. ``BDAT`` chunks are counted octets and pass unchanged.

It follows the client's side of the dialogue just enough for that, and to tell, when the
input ends, whether the client said ``QUIT`` and whether a transaction was left open
(which ``sendmail -bs`` reports in its exit status). Pure: bytes in, bytes out; standard
library only; reads no settings.
"""

from __future__ import annotations

_FLUSH = 65536  # a DATA line longer than this is passed on before its end is seen


class ScriptFraming:
    """Feed stdin's bytes; send what ``feed`` and, at end of input, ``end`` return."""

    def __init__(self) -> None:
        self._line = bytearray()  # the unfinished line
        self._data = False  # inside DATA content
        self._raw = 0  # BDAT octets still to pass unchanged
        self._bdat_last = False
        self._mid_line = False  # part of the current DATA line was already passed on
        self.in_transaction = False  # MAIL given, its message not yet ended
        self.quit = False  # the client sent QUIT

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        pos = 0
        while pos < len(data):
            if self._raw:
                chunk = data[pos : pos + self._raw]
                out += chunk
                pos += len(chunk)
                self._raw -= len(chunk)
                if not self._raw and self._bdat_last:
                    self.in_transaction = False
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                break
            self._line += data[pos:end]
            pos = end + 1
            out += self._finish_line()
        if self._data and len(self._line) > _FLUSH:
            keep = 1 if self._line.endswith(b"\r") else 0  # may be half of a CRLF
            out += self._line[: len(self._line) - keep]
            del self._line[: len(self._line) - keep]
            self._mid_line = True
        return bytes(out)

    def end(self) -> bytes:
        """The last line, when the input did not end with a line end."""
        return self._finish_line() if self._line else b""

    def _finish_line(self) -> bytes:
        line = bytes(self._line).removesuffix(b"\r")
        self._line.clear()
        whole = not self._mid_line
        self._mid_line = False
        if self._data:
            if whole and line == b".":
                self._data = self.in_transaction = False
        else:
            self._command(line)
        return line + b"\r\n"

    def _command(self, line: bytes) -> None:
        words = line.split()
        verb = words[0].upper() if words else b""
        if verb == b"MAIL":
            self.in_transaction = True
        elif verb in (b"RSET", b"HELO", b"EHLO"):
            self.in_transaction = False
        elif verb == b"DATA":
            self._data = True
        elif verb == b"QUIT":
            self.quit = True
        elif verb == b"BDAT" and len(words) > 1 and words[1].isdigit():
            self._raw = int(words[1])
            self._bdat_last = len(words) > 2 and words[2].upper() == b"LAST"
            if not self._raw and self._bdat_last:
                self.in_transaction = False
