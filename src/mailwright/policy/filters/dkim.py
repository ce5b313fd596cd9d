"""The ``dkim`` filter: signs outgoing mail with DKIM (RFC 6376; Ed25519 keys per RFC 8463).

At end of message, mail from a trusted client (a relay client: loopback or
``relay_networks``, an authenticated user, or local submission) whose ``From:``
addresses are all in ``domains`` (or their subdomains) gets a ``DKIM-Signature``
for ``domain`` and ``selector``, inserted above every other header field. Mail
from anyone else is passed unsigned: a stranger on port 25 must not get our
signature. The body hash is computed streaming (constant memory). The key
(``key_file``, PEM: RSA of 2048 bits or more, or Ed25519) is read when the
configuration is loaded, so a bad key is a configuration error naming the file.
Put this filter last: a later filter changing a signed header or the body breaks
the signature.
Settings: its ``options`` (domain, selector, key_file, domains, headers,
oversign, canonicalization, sign_only_trusted).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from email.utils import getaddresses
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from mailwright.config.schema import Settings
from mailwright.core.dkim import Canon, Signer, SigningKey, body_hash, load_signing_key
from mailwright.core.headers import HeaderList
from mailwright.core.reply import Reply
from mailwright.policy.filters.base import Filter
from mailwright.policy.hooks import SessionInfo, Transaction

log = logging.getLogger("mailwright.filters.dkim")

MIN_RSA_BITS = 2048
# RFC 6376 section 5.4.1's recommended set; a trailing * covers every name with that prefix
DEFAULT_HEADERS = (
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-*",
    "In-Reply-To",
    "References",
    "List-*",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
)
# signed once more than present: nobody can add one of these (a second From:, say) later
DEFAULT_OVERSIGN = ("From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]+$")
_SELECTOR = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*$")
_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")


Canonicalization = Literal["relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"]


def domain_name(value: str) -> str:
    value = value.lower().rstrip(".")
    if not _DOMAIN.match(value):
        raise ValueError(f"{value!r} is not a domain name")
    return value


def load_key(path: str) -> SigningKey:
    """The private key in PEM file ``path``; ``ValueError`` naming the file and the problem."""
    return load_signing_key(path, "DKIM", MIN_RSA_BITS)


class DkimOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str
    selector: str
    key_file: str
    domains: list[str] = []  # empty: just ``domain``
    headers: list[str] = list(DEFAULT_HEADERS)
    oversign: list[str] = list(DEFAULT_OVERSIGN)
    canonicalization: Canonicalization = "relaxed/relaxed"
    sign_only_trusted: bool = True

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return domain_name(value)

    @field_validator("domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        return [domain_name(v) for v in values]

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not _SELECTOR.match(value):
            raise ValueError(f"{value!r} is not a DKIM selector")
        return value

    @field_validator("key_file")
    @classmethod
    def _key_file(cls, value: str) -> str:
        load_key(value)
        return value

    @field_validator("headers", "oversign")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        for name in values:
            if not _FIELD_NAME.match(name.removesuffix("*")) or "*" in name[:-1]:
                raise ValueError(f"{name!r} is not a header field name")
        return values

    @field_validator("headers")
    @classmethod
    def _from_signed(cls, values: list[str]) -> list[str]:
        if any(name.lower() == "from" for name in values):
            return values
        return ["From", *values]  # RFC 6376 5.4: From is always signed

    @property
    def signed_domains(self) -> list[str]:
        return self.domains or [self.domain]


def from_domains(headers: HeaderList) -> list[str] | None:
    """The domains of the addresses in the one ``From:`` field; None unless there is exactly one."""
    fields = list(headers.all("From"))
    if len(fields) != 1:
        return None
    addresses = [addr for _, addr in getaddresses([fields[0].text])]
    if not addresses or any("@" not in addr for addr in addresses):
        return None
    found = [addr.rpartition("@")[2].lower().rstrip(".") for addr in addresses]
    return found if found and all(found) else None


def covered(domain: str, domains: list[str]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in domains)


class DkimFilter(Filter):
    Options = DkimOptions

    def __init__(self, name: str, options: DkimOptions, settings: Settings) -> None:
        super().__init__(name, options, settings)
        header_canon, _, body_canon = options.canonicalization.partition("/")
        self.body_canon: Canon = "simple" if body_canon == "simple" else "relaxed"
        self.signer = Signer(
            domain=options.domain,
            selector=options.selector,
            key=load_key(options.key_file),
            headers=tuple(options.headers),
            oversign=tuple(options.oversign),
            header_canon="simple" if header_canon == "simple" else "relaxed",
            body_canon=self.body_canon,
        )

    def trusted(self, session: SessionInfo) -> bool:
        return session.trusted_relay or bool(session.auth_user) or session.is_local

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        options: DkimOptions = self.options
        assert txn.headers is not None and txn.body is not None
        if options.sign_only_trusted and not self.trusted(session):
            return None
        domains = from_domains(txn.headers)
        if domains is None or not all(covered(d, options.signed_domains) for d in domains):
            log.debug("%s: not signed: From: domain %s not ours", txn.queue_id, domains)
            return None
        bh = await asyncio.to_thread(body_hash, txn.body.chunks(), self.body_canon)
        txn.headers.insert(0, self.signer.sign(txn.headers, bh, int(time.time())))
        log.info("%s: DKIM signed d=%s s=%s", txn.queue_id, options.domain, options.selector)
        return None
