"""Per-listener rules of message submission (RFC 6409) and of the AUTH= parameter (RFC 4954).

At MAIL, on a listener that requires them: TLS first (``530 5.7.0 Must issue a
STARTTLS command first``, unless the client is on loopback and
``auth.plaintext_on_loopback`` allows plaintext there), then AUTH
(``530 5.7.0 Authentication required``). On every listener the ``AUTH=`` value
of MAIL is trusted only from an authenticated session; from anyone else it
becomes ``<>`` (RFC 4954 section 5). At the end of a message received on a
submission listener, a missing ``Date:`` or ``Message-ID:`` is added; nothing
else is rewritten. Trusts only what the edge recorded about the session (TLS,
authenticated user). Settings: ``listeners``, ``auth.plaintext_on_loopback``,
``hostname``.
"""

from __future__ import annotations

import ipaddress

from mailwright.config.schema import Listener, ListenerAuth, ListenerKind, Settings
from mailwright.core import submission
from mailwright.core.headers import Header, HeaderList
from mailwright.core.reply import Reply
from mailwright.policy.hooks import Hook, SessionInfo, Transaction

TLS_FIRST = Reply.of(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_FIRST = Reply.of(530, "5.7.0", "Authentication required")


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class SubmissionPolicy(Hook):
    name = "submission"

    def __init__(self, listeners: list[Listener], hostname: str, plaintext_on_loopback: bool):
        self.listeners = {listener.display_name: listener for listener in listeners}
        self.hostname = hostname
        self.plaintext_on_loopback = plaintext_on_loopback

    @classmethod
    def from_settings(cls, settings: Settings) -> SubmissionPolicy:
        return cls(settings.listeners, settings.hostname, settings.auth.plaintext_on_loopback)

    def plaintext_allowed(self, session: SessionInfo) -> bool:
        return self.plaintext_on_loopback and is_loopback(session.client_address)

    async def mail(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        listener = self.listeners.get(session.listener_name)
        if listener is not None and not session.is_local:
            if (
                listener.tls_required
                and not session.tls_version
                and not self.plaintext_allowed(session)
            ):
                return TLS_FIRST
            if listener.auth_mode is ListenerAuth.REQUIRE and not session.auth_user:
                return AUTH_FIRST
        if txn.params.auth is not None and not session.auth_user:
            txn.params.auth = "<>"  # an unauthenticated client's claim is not passed on
        return None

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        listener = self.listeners.get(session.listener_name)
        if listener is None or listener.kind is not ListenerKind.SUBMISSION:
            return None
        if txn.headers is None:
            return None
        headers = HeaderList(txn.headers)
        if headers.get("Date") is None:
            headers.append(Header.make("Date", submission.date_value()))
        if headers.get("Message-ID") is None:
            headers.append(Header.make("Message-ID", submission.message_id_value(self.hostname)))
        txn.headers = headers
        return None
