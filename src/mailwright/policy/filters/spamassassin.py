"""The ``spamassassin`` filter: asks spamd about each message, marks it, rejects the worst.

At end of message the whole message (with our ``Received:``) goes to spamd
(``host``/``port`` or ``socket``) unless it is larger than ``max_size`` (spamc's
default 500 KB: such mail is passed unscanned). The answer becomes the
headers SpamAssassin itself would add: ``X-Spam-Flag: YES`` (spam only),
``X-Spam-Score``, ``X-Spam-Level`` (one ``*`` per point) and ``X-Spam-Status``
(``Yes, score=15.2 required=5.0 tests=GTUBE,...``); any such headers the client
sent are removed first so they cannot be forged. A score at or above
``reject_score`` refuses the message with ``550 5.7.1``. spamd being down or
slow is a filter failure handled by the entry's ``on_failure``.
Settings: its ``options``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mailwright.core.headers import Header
from mailwright.core.reply import Reply
from mailwright.policy.filters import spamd
from mailwright.policy.filters.base import Filter
from mailwright.policy.hooks import SessionInfo, Transaction

SPAM_HEADERS = ("X-Spam-Flag", "X-Spam-Score", "X-Spam-Level", "X-Spam-Status")


class SpamAssassinOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=783, ge=1, le=65535)
    socket: str | None = None  # a unix socket path instead of host/port
    timeout: float = Field(default=30.0, gt=0)
    max_size: int = Field(default=500 * 1024, ge=1)
    reject_score: float | None = None  # refuse mail scoring at least this much
    user: str | None = None  # whose spamd preferences to use


def _fold(rules: tuple[str, ...], width: int = 70) -> str:
    """Rule names joined by commas, folded so no header line grows past ``width``."""
    lines = [""]
    for rule in rules:
        if lines[-1] and len(lines[-1]) + len(rule) + 1 > width:
            lines[-1] += ","
            lines.append("")
        lines[-1] += ("," if lines[-1] else "") + rule
    return "\r\n\t".join(lines)


class SpamAssassinFilter(Filter):
    Options = SpamAssassinOptions

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        options: SpamAssassinOptions = self.options
        assert txn.headers is not None and txn.body is not None
        headers = txn.headers
        headers[:] = [h for h in headers if not any(h.is_(n) for n in SPAM_HEADERS)]
        size = len(headers.encode()) + 2 + txn.body.size
        if size > options.max_size:
            return None
        message = headers.encode() + b"\r\n" + b"".join(txn.body.chunks())
        verdict = spamd.parse(await self._ask(spamd.request(message, options.user)))
        headers.extend(self._headers(verdict))
        if options.reject_score is not None and verdict.score >= options.reject_score:
            return Reply.of(550, "5.7.1", f"Message rejected as spam (score {verdict.score:.1f})")
        return None

    async def _ask(self, request: bytes) -> bytes:
        options: SpamAssassinOptions = self.options
        async with asyncio.timeout(options.timeout):
            if options.socket:
                reader, writer = await asyncio.open_unix_connection(options.socket)
            else:
                reader, writer = await asyncio.open_connection(options.host, options.port)
            try:
                writer.write(request)
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
                return await reader.read(-1)  # spamd closes the connection after its answer
            finally:
                writer.close()

    @staticmethod
    def _headers(verdict: spamd.Verdict) -> list[Header]:
        flag = "Yes" if verdict.spam else "No"
        tests = _fold(verdict.rules) or "none"
        out: list[Any] = []
        if verdict.spam:
            out.append(Header.make("X-Spam-Flag", "YES"))
        out += [
            Header.make("X-Spam-Score", f"{verdict.score:.1f}"),
            Header.make("X-Spam-Level", "*" * max(0, min(50, int(verdict.score)))),
            Header.make(
                "X-Spam-Status",
                f"{flag}, score={verdict.score:.1f} required={verdict.threshold:.1f}\r\n\t"
                f"tests={tests}",
            ),
        ]
        return out
