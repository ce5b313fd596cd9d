"""SMTP replies: a code, an RFC 3463 enhanced status code and text.

Trusts nothing about the text: CR and LF inside text are replaced so a reply can
never inject a line into the dialogue. ``from_peer`` tells a reply a peer sent (set only
by ``smtp.reply.ReplyParser``) from one Mailwright wrote itself, so that a delivery report
quotes a server only for what it really said. Reads no settings.
"""

from __future__ import annotations

from typing import Any


def _clean(line: str) -> str:
    return line.replace("\r", " ").replace("\n", " ")


_set = object.__setattr__  # the way past __setattr__ for __init__; looked up once


class Reply:
    """One SMTP reply, possibly multi-line (``lines`` holds one entry per line).

    Immutable and hashable. A plain class rather than a dataclass: ``sendmail`` imports it
    and must start fast (the ``dataclasses`` module costs milliseconds to import).
    """

    __slots__ = ("code", "from_peer", "lines", "status")
    code: int
    status: str | None
    lines: tuple[str, ...]
    from_peer: bool  # who wrote it: a peer (read off the wire) or we; not part of its value

    def __init__(
        self, code: int, status: str | None, lines: tuple[str, ...], from_peer: bool = False
    ) -> None:
        _set(self, "code", code)
        _set(self, "status", status)
        _set(self, "lines", tuple(lines))
        _set(self, "from_peer", from_peer)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Reply is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Reply is immutable: cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Reply)
        return (self.code, self.status, self.lines) == (other.code, other.status, other.lines)

    def __hash__(self) -> int:
        return hash((self.code, self.status, self.lines))

    def __repr__(self) -> str:
        return (
            f"Reply(code={self.code!r}, status={self.status!r}, lines={self.lines!r}, "
            f"from_peer={self.from_peer!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Reply, (self.code, self.status, self.lines, self.from_peer))

    def with_status(self, status: str | None) -> Reply:
        """The same reply with another enhanced status code."""
        return Reply(self.code, status, self.lines, self.from_peer)

    def with_code(self, code: int, status: str | None) -> Reply:
        """The same text under another code (a 5xx made 4xx, say)."""
        return Reply(code, status, self.lines, self.from_peer)

    @classmethod
    def of(cls, code: int, status: str | None, *lines: str, from_peer: bool = False) -> Reply:
        if len(lines) == 1:  # most replies: no generator for them
            return cls(code, status, (_clean(lines[0]),), from_peer)
        return cls(code, status, tuple(_clean(x) for x in lines) or ("",), from_peer)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def encode(self, enhanced: bool = True) -> bytes:
        """Wire form: ``code-`` for continuation lines, ``code `` for the last."""
        prefix = f"{self.status} " if enhanced and self.status else ""
        if len(self.lines) == 1:
            return f"{self.code} {prefix}{self.lines[0]}\r\n".encode("utf-8", "replace")
        out = []
        last = len(self.lines) - 1
        for i, line in enumerate(self.lines):
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.code}{status} {' / '.join(self.lines)}"
