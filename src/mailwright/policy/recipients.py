"""The RCPT-time check of local recipients: unknown users are refused, not bounced later.

For a recipient in a local or virtual domain, the recipient must exist: an alias,
a local user (``user+detail`` counts as ``user``), or a virtual user table entry;
``postmaster`` always exists. Otherwise ``550 5.1.1 <addr>... User unknown``; a
virtual table ``error:`` target gives its own reply. Only existence is checked
here; the full expansion (with its loops and errors) happens at delivery time.
Other domains are left to the other hooks (relay control). The lookups run in a
small thread pool of their own (``LOOKUP_THREADS``): never behind delivery work (alias
expansion at delivery time, mailbox writes), so a busy or stuck delivery cannot slow
RCPT down. Trusts the resolver's tables. Settings: those of ``routing.resolution``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

from mailwright.core.envelope import Recipient
from mailwright.core.reply import Reply
from mailwright.policy.hooks import Hook, SessionInfo, Transaction
from mailwright.routing.resolution import AddressResolver

LOOKUP_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _lookups() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(LOOKUP_THREADS, "mailwright-rcpt")
        return _pool


class LocalRecipients(Hook):
    name = "local-recipients"

    def __init__(self, resolver: AddressResolver) -> None:
        self.resolver = resolver

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        address = recipient.address
        if address.is_postmaster or not self.resolver.handles(address):
            return None
        call = functools.partial(contextvars.copy_context().run, self.resolver.check, address)
        return await asyncio.get_running_loop().run_in_executor(_lookups(), call)
