"""The ``dkim_verify`` filter: verifies DKIM signatures and adds Authentication-Results.

At end of message, mail from an untrusted client (not loopback or
``relay_networks``, not authenticated, not local submission; ``verify_trusted``
verifies those too) loses every ``Authentication-Results`` field carrying our
authserv-id (a forgery, RFC 8601 section 5) and gets one new field at the top:
``Authentication-Results: <authserv_id>; dkim=<result> ... header.d= header.s=
header.b=`` with one ``dkim=`` per signature (the first ``max_signatures``), or
``dkim=none``, after the results other checks of ours gave for the same
authserv-id (``spf=``, policy.spf): one field per authserv-id
(``core.authresults``). Never refuses mail: what to do with a failure is DMARC's call.
Keys come from DNS (``s._domainkey.d`` TXT) through the daemon's resolver
(``dns.*``); a lookup slower than ``timeout`` or a DNS failure is ``temperror``.
The body hashes are computed streaming in a worker thread (constant memory).
Trusts DNS and the message for nothing (``core.dkim_verify`` checks every tag).
Each result counts in ``mailwright_dkim_results_total{result}``.
Settings: its ``options`` (authserv_id, max_signatures, timeout,
verify_trusted), ``hostname`` (the default authserv-id) and ``dns.*``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailwright.config.schema import Settings
from mailwright.core import authresults
from mailwright.core.dkim_verify import (
    DEFAULT_LIMIT,
    Plan,
    TempError,
    body_hashes,
    result_text,
)
from mailwright.core.reply import Reply
from mailwright.observability import metrics
from mailwright.policy.filters.base import Filter
from mailwright.policy.hooks import SessionInfo, Transaction
from mailwright.routing.mx import DnsResolver, txt_string
from mailwright.routing.resolver import DnsTemporaryError

log = logging.getLogger("mailwright.filters.dkim_verify")

_AUTHSERV_ID = re.compile(r"^[A-Za-z0-9._-]+$")


class DkimVerifyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    authserv_id: str = ""  # empty: the daemon's hostname
    max_signatures: int = Field(default=DEFAULT_LIMIT, ge=1, le=50)
    timeout: float = Field(default=10.0, gt=0)  # one key lookup
    verify_trusted: bool = False

    @field_validator("authserv_id")
    @classmethod
    def _authserv_id(cls, value: str) -> str:
        if value and not _AUTHSERV_ID.match(value):
            raise ValueError(f"{value!r} is not an authserv-id (a host name)")
        return value


class DkimVerifyFilter(Filter):
    Options = DkimVerifyOptions

    def __init__(self, name: str, options: DkimVerifyOptions, settings: Settings) -> None:
        super().__init__(name, options, settings)
        self.authserv_id = options.authserv_id or settings.hostname
        self.resolver = DnsResolver.from_settings(settings.dns)

    def trusted(self, session: SessionInfo) -> bool:
        return session.trusted_relay or bool(session.auth_user) or session.is_local

    async def lookup(self, name: str) -> list[str]:
        """The TXT texts at ``name``; ``TempError`` when DNS fails or is too slow."""
        try:
            async with asyncio.timeout(self.options.timeout):
                records = await self.resolver.records(name, "TXT")
        except TimeoutError:
            raise TempError(f"key lookup {name} timed out") from None
        except DnsTemporaryError:
            raise TempError(f"key lookup {name} failed") from None
        return [txt_string(r) for r in records]

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        options: DkimVerifyOptions = self.options
        assert txn.headers is not None and txn.body is not None
        if not options.verify_trusted and self.trusted(session):
            return None
        plan = Plan.of(txn.headers, options.max_signatures)
        hashes = await asyncio.to_thread(body_hashes, txn.body.chunks(), plan.body_specs)
        results = await plan.verify(txn.headers, hashes, self.lookup, int(time.time()))
        txn.dkim_results = list(results)  # for DMARC (policy.dmarc)
        for result in results:
            metrics.dkim_result(result.result)
        lines = txn.auth_results.setdefault(self.authserv_id, [])
        ours = 1 if lines else 0  # the field an earlier check of ours wrote (spf=)
        lines += [result_text(r) for r in results]
        forged = authresults.write(txn.headers, self.authserv_id, lines) - ours
        log.info(
            "%s: %s%s",
            txn.queue_id,
            "; ".join(result_text(r) for r in results),
            f"; removed {forged} forged Authentication-Results" if forged else "",
        )
        return None
