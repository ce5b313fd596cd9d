"""ARC (RFC 8617) of inbound mail: validate the chain, report ``arc=`` (``[arc] verify``).

At end of message the hook validates the message's ARC chain (``core.arc``): the
body hashes of its ARC-Message-Signatures in one streaming pass in a worker thread
(constant memory), the keys (``<s>._domainkey.<d>`` TXT) through the daemon's
resolver (``dns.*``), each lookup bounded by ``arc.timeout``. The result goes

- into our ``Authentication-Results:`` field (``core.authresults``: one field per
  authserv-id, after ``spf=``, before the ``dkim_verify`` filter's ``dkim=``):
  ``arc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1``, ``arc=fail
  reason="..."`` or ``arc=none`` (RFC 8617 6);
- into the message's mail log line (``arc=pass``), and a failure's reason into a
  log line of its own;
- into ``mailwright_arc_results_total{result}``.

That field is what ``delivery.arcseal`` later reads when it seals the message for
forwarding: its ``arc=`` is the new ARC-Seal's ``cv=``, its results the new AAR.
Never refuses mail: a failed chain is treated as no chain (RFC 8617 5.2), what to
do with the message is DMARC's (or the administrator's) call. Any error, DNS
trouble included, is ``fail`` (RFC 8617 5.2.1).

Not validated (unless ``arc.verify_trusted``): local submission, clients trusted
to relay, authenticated clients, and listeners other than ``smtp`` kind.
Trusts nothing in the message or DNS (``core.arc`` checks every tag). Settings:
``arc.*``, ``hostname`` (the default authserv-id), ``dns.*``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mailwright.config.schema import ArcSection, Settings
from mailwright.core import authresults
from mailwright.core.arc import Chain, result_text
from mailwright.core.dkim_verify import TempError, body_hashes
from mailwright.core.reply import Reply
from mailwright.observability import metrics
from mailwright.policy.hooks import Hook, SessionInfo, Transaction
from mailwright.policy.relay import unchecked
from mailwright.routing.mx import DnsResolver, txt_string
from mailwright.routing.resolver import DnsTemporaryError

log = logging.getLogger("mailwright.policy.arc")


class ArcVerify(Hook):
    name = "arc"

    def __init__(self, section: ArcSection, hostname: str, resolver: DnsResolver) -> None:
        self.section = section
        self.authserv_id = section.authserv_id or hostname
        self.resolver = resolver

    def exempt(self, session: SessionInfo) -> bool:
        if self.section.verify_trusted:
            return False
        return unchecked(session)

    async def lookup(self, name: str) -> list[str]:
        """The TXT texts at ``name``; ``TempError`` when DNS fails or is too slow."""
        try:
            async with asyncio.timeout(self.section.timeout):
                records = await self.resolver.records(name, "TXT")
        except TimeoutError:
            raise TempError(f"key lookup {name} timed out") from None
        except DnsTemporaryError:
            raise TempError(f"key lookup {name} failed") from None
        return [txt_string(r) for r in records]

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        if self.exempt(session) or txn.headers is None or txn.body is None:
            return None
        chain = Chain.of(txn.headers)
        hashes = {}
        if chain.body_specs:
            hashes = await asyncio.to_thread(body_hashes, txn.body.chunks(), chain.body_specs)
        result = await chain.validate(txn.headers, hashes, self.lookup, int(time.time()))
        metrics.arc_result(result.result)
        txn.log_fields["arc"] = result.result
        lines = txn.auth_results.setdefault(self.authserv_id, [])
        ours = 1 if lines else 0  # the field an earlier check of ours wrote (spf=)
        lines.append(result_text(result, session.client_address))
        forged = authresults.write(txn.headers, self.authserv_id, lines) - ours
        if result.result == "fail" or forged:
            log.info(
                "%s: arc: [%s] %s%s",
                txn.queue_id,
                session.client_address,
                f"fail ({result.reason})" if result.result == "fail" else result.result,
                f"; removed {forged} forged Authentication-Results" if forged else "",
            )
        return None


def from_settings(settings: Settings) -> ArcVerify | None:
    """The hook for ``[arc] verify``, or None when it is off (the default)."""
    if not settings.arc.verify:
        return None
    return ArcVerify(settings.arc, settings.hostname, DnsResolver.from_settings(settings.dns))
