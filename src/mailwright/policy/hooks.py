"""The policy seam: one async hook per SMTP stage, run in a configured order.

Stages match the milter stages: connect, helo, mail, rcpt, data, message (end of
message, where the whole message can be read and changed), plus reset (the
transaction was abandoned) and close. A hook returns ``None`` to let the next
hook decide, a positive ``Reply`` to accept at once (later hooks are skipped
for that stage, e.g. an access table ``OK``), or a negative ``Reply`` to refuse.
At the message stage a hook may also edit the transaction (headers, body,
recipients, sender) or set ``discard`` / ``hold_reason``. A recipient refused by
one of the MTA's own checks (a hook with ``mta_check``) is shown to the hooks
after it (``rcpt_refused``: milters that negotiated ``SMFIP_RCPT_REJ``); their
answer cannot change the refusal. An unknown command's reply is the first
refusal a hook gives (a milter's reply to UNKNOWN), else the core's ``500``.

Trusts the hooks it is given; a hook that raises is treated as a temporary
failure (451 4.3.0) so a broken filter never crashes a session or loses mail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailwright.core.address import Address
from mailwright.core.envelope import MailParams, Recipient
from mailwright.core.headers import HeaderList
from mailwright.core.reply import Reply
from mailwright.queue.store import BodySource

if TYPE_CHECKING:  # a lower layer; not loaded by whoever only needs the hook classes
    from mailwright.core.dkim_verify import Result as DkimResult

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
    # RFC 8601 results of our own checks (spf=, dkim=) per authserv-id, in the order found:
    # each check adds its own and rewrites the one Authentication-Results field of that id
    auth_results: dict[str, list[str]] = field(default_factory=dict)
    log_fields: dict[str, str] = field(default_factory=dict)  # added to the "from=" log line
    # what DMARC aligns (policy.dmarc): the SPF-checked domain, its scope (mfrom or helo) and
    # result (policy.spf); the DKIM results (dkim_verify); None: that check did not run
    spf_identity: tuple[str, str, str] | None = None
    dkim_results: list[DkimResult] | None = None


class Hook:
    """Base class: every stage continues unless a subclass decides otherwise."""

    name = "hook"
    mta_check = True  # its refusals are the MTA's own, shown to milters wanting RCPT_REJ

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

    async def rcpt_refused(
        self,
        session: SessionInfo,
        txn: Transaction,
        recipient: Recipient,
        raw_params: list[str],
        refusal: Reply,
    ) -> None:
        """A hook before this one refused ``recipient`` with ``refusal`` (for RCPT_REJ)."""
        return None

    async def data(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return None

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return None

    async def unknown(self, session: SessionInfo, line: str) -> Reply | None:
        """An unrecognised command: a refusal replaces the core's ``500`` (a milter's reply)."""
        return None

    async def reset(self, session: SessionInfo, txn: Transaction | None) -> None:
        return None

    async def close(self, session: SessionInfo) -> None:
        return None


_STAGES = (
    "connect", "helo", "mail", "rcpt", "rcpt_refused", "data", "message", "unknown", "reset",
    "close",
)  # fmt: skip


def _acts_at(hook: Hook, stage: str) -> bool:
    """Whether ``hook`` does anything at ``stage``: not when it keeps ``Hook``'s own no-op."""
    method = getattr(hook, stage)
    return getattr(method, "__func__", None) is not getattr(Hook, stage)


class Pipeline:
    """Runs hooks in order for each stage.

    Each stage calls only the hooks that act at it (a hook that keeps ``Hook``'s no-op for a
    stage is skipped there): a session goes through every stage, and most hooks act at one
    or two of them.
    """

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self.hooks = list(hooks)
        self._at = {
            stage: [(i, h) for i, h in enumerate(self.hooks) if _acts_at(h, stage)]
            for stage in _STAGES
        }

    async def _run(self, stage: str, *args: object) -> Reply | None:
        for _, hook in self._at[stage]:
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
        for index, hook in self._at["rcpt"]:
            try:
                reply = await hook.rcpt(session, txn, recipient, raw_params)
            except Exception:
                log.exception("policy hook %s failed at rcpt", hook.name)
                return HOOK_FAILED
            if reply is None:
                continue
            if not reply.positive and hook.mta_check:
                for _, later in (x for x in self._at["rcpt_refused"] if x[0] > index):
                    try:
                        await later.rcpt_refused(session, txn, recipient, raw_params, reply)
                    except Exception:
                        log.exception("policy hook %s failed at rcpt_refused", later.name)
            return reply
        return None

    async def data(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return await self._run("data", session, txn)

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return await self._run("message", session, txn)

    async def unknown(self, session: SessionInfo, line: str) -> Reply | None:
        """The first refusal of an unknown command; ``None``: the core's ``500``."""
        for _, hook in self._at["unknown"]:
            try:
                reply = await hook.unknown(session, line)
            except Exception:
                log.exception("policy hook %s failed at unknown", hook.name)
                continue
            if reply is not None and not reply.positive:
                return reply
        return None

    async def reset(self, session: SessionInfo, txn: Transaction | None) -> None:
        for _, hook in self._at["reset"]:
            try:
                await hook.reset(session, txn)
            except Exception:
                log.exception("policy hook %s failed at reset", hook.name)

    async def close(self, session: SessionInfo) -> None:
        for _, hook in self._at["close"]:
            try:
                await hook.close(session)
            except Exception:
                log.exception("policy hook %s failed at close", hook.name)
