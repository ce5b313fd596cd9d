"""The LMTP delivery agent (RFC 2033): final delivery to a mailbox server over TCP or a Unix socket.

Everything but the dialect is ``SmtpAgent``'s: LHLO instead of EHLO, no MX
lookup (``lmtp:[host]:port``, ``lmtp:host`` via A/AAAA, ``lmtp:unix:/path``;
the default port is 24), and after the content one reply per accepted
recipient, in RCPT order, so each recipient gets its own outcome: 2xx is
DELIVERED (this is final delivery, whatever DSN the server offers), 4xx stays
queued, 5xx bounces. Without a resolver, host names are looked up with the
system resolver (``getaddrinfo``). Reads the same constructor settings as
``SmtpAgent``; STARTTLS is never tried over a Unix socket.
"""

from __future__ import annotations

import asyncio
import socket

from mailwright.delivery.smtp import SmtpAgent
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError, MailHost


class LmtpAgent(SmtpAgent):
    name = "lmtp"
    lmtp = True
    default_port = 24

    async def _lookup(self, host: str, mx: bool) -> list[MailHost]:
        if self.resolver is not None:
            return await self.resolver.host_addresses(host)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise DnsTemporaryError(str(exc)) from None
            raise DnsPermanentError(str(exc)) from None
        addresses = dict.fromkeys(str(info[4][0]) for info in infos)
        return [MailHost(host, address) for address in addresses]
