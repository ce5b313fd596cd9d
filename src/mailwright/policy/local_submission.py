"""What the daemon adds to a local submission (``sendmail``, the local socket, the maildrop).

At the message stage, for sessions of the local listener only:

- ``X-Authentication-Warning: <host>: <user> set sender to <addr> using -f`` when a user
  who is not trusted (root, the daemon's own user, ``local.trusted_users``) gives an
  envelope sender other than their own address, as Sendmail's ``authwarnings`` does;
- ``From:``, ``Date:`` and ``Message-ID:`` when the message lacks them (RFC 6409 section
  8), so a bare ``-bs`` or socket client gets the same repairs as ``sendmail``.

Trusts only the user name the edge derived from the socket's peer credentials (or the
maildrop file's owner), never the message. Settings: ``hostname``, ``local.domain``,
``local.trusted_users``, ``routing.local_domains``.
"""

from __future__ import annotations

import os
import pwd

from mailwright.config.schema import Settings
from mailwright.core import submission
from mailwright.core.address import Address
from mailwright.core.headers import Header, HeaderList
from mailwright.core.reply import Reply
from mailwright.policy.hooks import Hook, SessionInfo, Transaction

LOCAL_KIND = "local"  # SessionInfo.listener_kind of local submissions


def daemon_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid{os.geteuid()}"


def full_name_of(user: str) -> str:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return ""
    return submission.gecos_name(entry.pw_gecos, user)


class LocalSubmissionPolicy(Hook):
    name = "local-submission"

    def __init__(
        self, hostname: str, domain: str, local_domains: list[str], trusted: set[str]
    ) -> None:
        self.hostname = hostname
        self.domain = domain.lower()
        self.own_domains = {d.lower() for d in local_domains} | {self.domain, hostname.lower()}
        self.trusted = trusted

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalSubmissionPolicy:
        trusted = {"root", daemon_user(), *settings.local.trusted_users}
        return cls(settings.hostname, settings.local_domain, settings.local_domains, trusted)

    def is_own(self, user: str, sender: Address | None) -> bool:
        return (
            sender is not None
            and sender.local == user
            and sender.domain.lower() in self.own_domains
        )

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        if session.listener_kind != LOCAL_KIND or txn.headers is None:
            return None
        user = session.local_user
        headers = HeaderList(txn.headers)
        if user and user not in self.trusted and not self.is_own(user, txn.sender):
            sender = "" if txn.sender is None else str(txn.sender)
            warning = Header.make(
                "X-Authentication-Warning",
                submission.authentication_warning(self.hostname, user, sender),
            )
            after_trace = 1 if headers and headers[0].is_("Received") else 0
            headers.insert(after_trace, warning)
        self._complete(headers, user, txn.sender)
        txn.headers = headers
        return None

    def _complete(self, headers: HeaderList, user: str, sender: Address | None) -> None:
        if headers.get("From") is None:
            own = f"{user or 'MAILER-DAEMON'}@{self.domain}"
            address = own if sender is None else str(sender)
            # the passwd name only goes with the user's own address
            mine = user and (sender is None or self.is_own(user, sender))
            name = full_name_of(user) if mine else ""
            headers.append(Header.make("From", submission.from_value(address, name)))
        if headers.get("Date") is None:
            headers.append(Header.make("Date", submission.date_value()))
        if headers.get("Message-ID") is None:
            headers.append(Header.make("Message-ID", submission.message_id_value(self.hostname)))
