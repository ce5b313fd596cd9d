"""Building the ordered chain of filters from the configuration: milters and Python filters.

Each ``filters`` entry becomes one policy hook, in configuration order, after
the built-in relay control: a ``MilterHook`` for ``milter = "..."`` entries, a
``ScopedFilter`` around the plugin for ``plugin = "..."`` entries. Because they
are consecutive hooks, the second filter sees what the first one changed.
Milters get a router of their own (``routing``: the transport table, the
smarthost) for the route macros. Settings: ``filters``, ``hostname``,
``routing.local_domains``, ``routing.transport_table``, ``routing.smarthost``,
``queue.spool_dir``.
"""

from __future__ import annotations

import logging

from mailwright.config.schema import MilterFilter, PluginFilter, Settings
from mailwright.core.domains import DomainSet
from mailwright.core.envelope import Recipient
from mailwright.core.reply import Reply
from mailwright.observability import maillog
from mailwright.policy.filters import registry
from mailwright.policy.filters.base import Filter
from mailwright.policy.filters.scope import covers
from mailwright.policy.hooks import Hook, SessionInfo, Transaction
from mailwright.policy.milter.hook import MilterHook
from mailwright.policy.milter.macros import MacroSource
from mailwright.policy.milter.verdict import failure_reply
from mailwright.routing.router import Router

log = logging.getLogger("mailwright.filters")


class ScopedFilter(Hook):
    """Runs a Python filter only for the sessions it covers; its exceptions obey ``on_failure``."""

    def __init__(self, inner: Filter, config: PluginFilter) -> None:
        self.inner = inner
        self.config = config
        self.name = config.display_name

    async def _run(
        self, session: SessionInfo, stage: str, queue_id: str | None, *args: object
    ) -> Reply | None:
        if not covers(self.config, session):
            return None
        try:
            reply: Reply | None = await getattr(self.inner, stage)(session, *args)
        except Exception as exc:
            log.exception("filter %s failed at %s", self.name, stage)
            maillog.emit(
                queue_id,
                filter=self.name,
                stage=stage,
                failed=str(exc) or type(exc).__name__,
                action=self.config.on_failure.value,
            )
            return None if stage in ("connect", "helo") else failure_reply(self.config.on_failure)
        if reply is not None and not reply.positive:
            maillog.emit(queue_id, filter=self.name, stage=stage, reject=str(reply))
        return reply

    async def connect(self, session: SessionInfo) -> Reply | None:
        return await self._run(session, "connect", None)

    async def helo(self, session: SessionInfo, name: str) -> Reply | None:
        return await self._run(session, "helo", None, name)

    async def mail(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return await self._run(session, "mail", txn.queue_id, txn)

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        return await self._run(session, "rcpt", txn.queue_id, txn, recipient, raw_params)

    async def data(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        return await self._run(session, "data", txn.queue_id, txn)

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        if txn.discard:
            return None
        return await self._run(session, "message", txn.queue_id, txn)

    async def reset(self, session: SessionInfo, txn: Transaction | None) -> None:
        if covers(self.config, session):
            await self.inner.reset(session, txn)

    async def close(self, session: SessionInfo) -> None:
        if covers(self.config, session):
            await self.inner.close(session)


def build_filters(settings: Settings) -> list[Hook]:
    route = None
    if any(isinstance(entry, MilterFilter) for entry in settings.filters):
        route = Router.from_settings(settings)[0].route  # its table errors: logged by delivery
    source = MacroSource(settings.hostname, DomainSet(settings.local_domains), route)
    hooks: list[Hook] = []
    for entry in settings.filters:
        if isinstance(entry, MilterFilter):
            hooks.append(MilterHook(entry, source, settings.queue.spool_dir))
            continue
        cls = registry.load(entry.plugin)
        options = registry.validate_options(entry.plugin, entry.options)
        hooks.append(ScopedFilter(cls(entry.display_name, options, settings), entry))
    return hooks
