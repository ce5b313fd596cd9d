"""The policy seam: one async hook per SMTP stage, run in a configured order.

Stages match the milter stages: connect, helo, mail, rcpt, data, message (end of
message, where the whole message can be read and changed), plus reset (the
transaction was abandoned) and close. A hook returns ``None`` to let the next
hook decide, a positive ``Reply`` to accept at once (later hooks are skipped
for that stage, e.g. an access table ``OK``), or a negative ``Reply`` to refuse.
At the message stage a hook may also edit the transaction (headers, body,
recipients, sender) or set ``discard`` / ``hold_reason``.

Trusts the hooks it is given; a hook that raises is treated as a temporary
failure (451 4.3.0) so a broken filter never crashes a session or loses mail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailwright.core.address import Address
from mailwright.core.envelope import MailParams, Recipient
from mailwright.core.headers import HeaderList
from mailwright.core.reply import Reply
from mailwright.queue.store import BodySource

log = logging.getLogger("mailwright.policy")

HOOK_FAILED = Reply.of(451, "4.3.0", "Temporary failure in policy check, try again later")


@dataclass(slots=True)
class SessionInfo:
    """What is known about the client; read by every hook and by milter macros."""

    session_id: str
    listener_name: str
    listener_kind: str
    local_address: str
    local_port: int
    client_address: str  # IP address, "" for local submission
    client_port: int
    client_name: str = ""  # verified reverse DNS name, or ""
    helo: str = ""
    esmtp: bool = False
    tls_version: str = ""
    tls_cipher: str = ""
    tls_cipher_bits: int = 0
    auth_mechanism: str = ""
    auth_user: str = ""
    local_user: str = ""  # login name of a local submitter (sendmail command line)
    trusted_relay: bool = False  # may relay anywhere (loopback, relay_networks, AUTH)

    @property
    def is_local(self) -> bool:
        return self.client_address == ""


@dataclass(slots=True)
class Transaction:
    """One message in the making; hooks read it and, at the message stage, edit it."""

    queue_id: str
    sender: Address | None
    params: MailParams
    raw_sender: str = ""
    raw_mail_params: list[str] = field(default_factory=list)
    recipients: list[Recipient] = field(default_factory=list)
    headers: HeaderList | None = None  # set from the data stage on
    body: BodySource | None = None  # set at the message stage
    discard: bool = False  # accept, then silently drop
    hold_reason: str | None = None  # accept and keep on hold (quarantine)


class Hook:
    """Base class: every stage continues unless a subclass decides otherwise."""

    name = "hook"

    async def connect(self, session: SessionInfo) -> Reply | None:
        return None

    async def helo(self, session: SessionInfo, name: str) -> Reply | None:
        return None

    async def mail(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return None

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        return None

    async def data(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return None

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return None

    async def unknown(self, session: SessionInfo, line: str) -> Reply | None:
        """An unrecognised command, already answered 500 by the protocol core (for milters)."""
        return None

    async def reset(self, session: SessionInfo, txn: Transaction | None) -> None:
        return None

    async def close(self, session: SessionInfo) -> None:
        return None


class Pipeline:
    """Runs hooks in order for each stage."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self.hooks = list(hooks)

    async def _run(self, stage: str, *args: object) -> Reply | None:
        for hook in self.hooks:
            try:
                reply: Reply | None = await getattr(hook, stage)(*args)
            except Exception:
                log.exception("policy hook %s failed at %s", hook.name, stage)
                return HOOK_FAILED
            if reply is not None:
                return reply
        return None

    async def connect(self, session: SessionInfo) -> Reply | None:
        return await self._run("connect", session)

    async def helo(self, session: SessionInfo, name: str) -> Reply | None:
        return await self._run("helo", session, name)

    async def mail(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return await self._run("mail", session, txn)

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        return await self._run("rcpt", session, txn, recipient, raw_params)

    async def data(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return await self._run("data", session, txn)

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return await self._run("message", session, txn)

    async def unknown(self, session: SessionInfo, line: str) -> None:
        """Tell every hook about an unknown command; the reply (500) is already decided."""
        for hook in self.hooks:
            try:
                await hook.unknown(session, line)
            except Exception:
                log.exception("policy hook %s failed at unknown", hook.name)

    async def reset(self, session: SessionInfo, txn: Transaction | None) -> None:
        for hook in self.hooks:
            try:
                await hook.reset(session, txn)
            except Exception:
                log.exception("policy hook %s failed at reset", hook.name)

    async def close(self, session: SessionInfo) -> None:
        for hook in self.hooks:
            try:
                await hook.close(session)
            except Exception:
                log.exception("policy hook %s failed at close", hook.name)
