"""Which ``rua``/``ruf`` destinations may get a policy domain's DMARC reports (RFC 7489 7.1),
and the mail that takes a report to one (``message``).

A destination in the policy domain's organizational domain always may; another (a third
party) only when it publishes a TXT record starting ``v=DMARC1`` at
``<policy-domain>._report._dmarc.<destination-domain>``, so no one can point reports at
a mailbox that did not ask for them. A report larger than the URI's ``!`` limit is not
sent there. A failed lookup skips the destination this time (the caller logs why).

``message`` queues a report's header fields and body as mail from the reports' sender to
one destination, asking for no DSN (a report about a report helps nobody), 8BITMIME when
the body is 8-bit.

Trusts nothing from DNS beyond that TXT check. Reads no settings (the caller gives the
resolver, the Public Suffix List and the sender).
"""

from __future__ import annotations

from mailwright.core.address import AddressError, parse_mailbox
from mailwright.core.dmarc import PublicSuffixes, is_dmarc
from mailwright.core.dmarc_report import external_check_name
from mailwright.core.envelope import BodyType, Envelope, MailParams, Notify, Recipient
from mailwright.core.headers import Header, HeaderList
from mailwright.core.queueid import new_queue_id
from mailwright.queue.spool import Spool
from mailwright.queue.store import NewMessage, Origin
from mailwright.routing.mx import DnsResolver, txt_string
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError


async def refusal(
    resolver: DnsResolver,
    suffixes: PublicSuffixes,
    policy_domain: str,
    destination: str,
    limit: int | None,
    size: int,
) -> str:
    """Why ``destination`` (an address) does not get a report of ``size`` octets about
    ``policy_domain``, or "" when it may."""
    if limit is not None and size > limit:
        return f"the report ({size} octets) is over its limit of {limit}"
    domain = destination.rpartition("@")[2].lower()
    if suffixes.org_domain(domain) == suffixes.org_domain(policy_domain):
        return ""
    name = external_check_name(policy_domain, domain)
    try:
        texts = [txt_string(r) for r in await resolver.records(name, "TXT")]
    except DnsTemporaryError as exc:
        return f"the check of {name} failed ({exc}); tried again next time"
    except DnsPermanentError:
        texts = []
    if not any(is_dmarc(t) for t in texts):
        return f"external destination not authorized: no v=DMARC1 record at {name}"
    return ""


def message(
    sender: str,
    to: str,
    fields: list[tuple[str, str]],
    body: bytes,
    now: float,
    protocol: str,
) -> NewMessage:
    """A report as mail to ``to``; ``ValueError`` naming the address when it is no mailbox."""
    try:
        recipient = parse_mailbox(to)
    except AddressError as exc:
        raise ValueError(f"bad report address {to!r}: {exc}") from None
    body_type = BodyType.SEVEN_BIT if body.isascii() else BodyType.EIGHT_BIT
    return NewMessage(
        queue_id=new_queue_id(),
        envelope=Envelope(
            sender=parse_mailbox(sender),
            params=MailParams(body=body_type),
            recipients=[Recipient(recipient, notify=frozenset({Notify.NEVER}))],
        ),
        headers=HeaderList(Header.make(name, value) for name, value in fields),
        body=Spool.from_bytes(body),
        received_at=now,
        origin=Origin(protocol=protocol),
    )
