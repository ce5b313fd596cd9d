"""The next hop of a recipient: which transport, and where.

Pure data. Produced by routing (transport table, smarthost, local domains) and
consumed by the scheduler (grouping, per-destination concurrency) and the
delivery agents. Reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mailwright.core.reply import Reply


class Transport(StrEnum):
    SMTP = "smtp"
    LMTP = "lmtp"
    LOCAL = "local"  # mbox / maildir for a local user
    PIPE = "pipe"
    FILE = "file"
    ERROR = "error"  # refuse with a fixed reply (transport table "error:5.1.2 text")


@dataclass(frozen=True, slots=True)
class NextHop:
    transport: Transport
    host: str = ""  # a domain (MX lookup) or a host name/IP literal (no MX lookup)
    port: int | None = None  # None: the transport's default (25, or 24 for LMTP)
    mx: bool = True  # False for "[host]" forms: connect to host's A/AAAA directly
    socket_path: str = ""  # LMTP over a Unix socket
    error: Reply | None = None  # for Transport.ERROR

    # destination identity: recipients with the same key share one transaction and count
    # against the same per-destination concurrency limit (made once: asked many times)
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self._key())

    def _key(self) -> str:
        if self.socket_path:
            return f"{self.transport.value}:unix:{self.socket_path}"
        host = self.host if self.mx else f"[{self.host}]"
        port = f":{self.port}" if self.port else ""
        return f"{self.transport.value}:{host}{port}"

    def __str__(self) -> str:
        return self.key
