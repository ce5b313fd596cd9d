"""Which ``rua``/``ruf`` destinations may get a policy domain's DMARC reports (RFC 7489 7.1).

A destination in the policy domain's organizational domain always may; another (a third
party) only when it publishes a TXT record starting ``v=DMARC1`` at
``<policy-domain>._report._dmarc.<destination-domain>``, so no one can point reports at
a mailbox that did not ask for them. A report larger than the URI's ``!`` limit is not
sent there. A failed lookup skips the destination this time (the caller logs why).

Trusts nothing from DNS beyond that TXT check. Reads no settings (the caller gives the
resolver and the Public Suffix List).
"""

from __future__ import annotations

from mailwright.core.dmarc import PublicSuffixes, is_dmarc
from mailwright.core.dmarc_report import external_check_name
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
