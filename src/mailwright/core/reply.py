"""SMTP replies: a code, an RFC 3463 enhanced status code and text.

Trusts nothing about the text: CR and LF inside text are replaced so a reply can
never inject a line into the dialogue. ``from_peer`` tells a reply a peer sent (set only
by ``smtp.reply.ReplyParser``) from one Mailwright wrote itself, so that a delivery report
quotes a server only for what it really said. Reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _clean(line: str) -> str:
    return line.replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply, possibly multi-line (``lines`` holds one entry per line)."""

    code: int
    status: str | None
    lines: tuple[str, ...]
    # who wrote it: a peer (read off the wire) or we; not part of a reply's value
    from_peer: bool = field(default=False, compare=False)

    @classmethod
    def of(cls, code: int, status: str | None, *lines: str, from_peer: bool = False) -> Reply:
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
        out = []
        last = len(self.lines) - 1
        for i, line in enumerate(self.lines):
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.code}{status} {' / '.join(self.lines)}"
