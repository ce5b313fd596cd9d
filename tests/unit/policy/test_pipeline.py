"""The policy pipeline: hooks in order, only where they act, refusals told to later hooks."""

from __future__ import annotations

import asyncio

import pytest

from mailwright.core.address import parse_mailbox
from mailwright.core.envelope import MailParams, Recipient
from mailwright.core.reply import Reply
from mailwright.policy.hooks import Hook, Pipeline, SessionInfo, Transaction

REFUSED = Reply.of(550, "5.7.1", "no")


def _txn() -> Transaction:
    return Transaction(queue_id="Q1", sender=None, params=MailParams())


def _session() -> SessionInfo:
    return SessionInfo("1", "smtp-25", "smtp", "127.0.0.1", 25, "192.0.2.1", 4000)


class Watcher(Hook):
    """Notes the refusals of hooks before it."""

    def __init__(self, name: str, told: list[str]) -> None:
        self.name = name
        self.told = told

    async def rcpt_refused(self, *args: object, **kwargs: object) -> None:
        self.told.append(self.name)


class Refuser(Hook):
    name = "refuser"

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        return REFUSED


class Quiet(Hook):
    name = "quiet"


def test_a_refused_recipient_is_told_to_the_hooks_after_the_refusing_one_only() -> None:
    told: list[str] = []
    pipeline = Pipeline(
        [Watcher("before", told), Quiet(), Refuser(), Quiet(), Watcher("after", told)]
    )
    txn = _txn()
    recipient = Recipient(parse_mailbox("b@example.com"))
    reply = asyncio.run(pipeline.rcpt(_session(), txn, recipient, []))
    assert reply == REFUSED
    assert told == ["after"]


def test_a_stage_a_hook_leaves_to_the_base_class_costs_no_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Hook``'s own no-op is never awaited: a session passes every stage, most hooks act
    at one or two."""
    calls: list[str] = []

    async def counted_noop(self: Hook, session: SessionInfo, txn: Transaction) -> Reply | None:
        calls.append(self.name)
        return None

    monkeypatch.setattr(Hook, "mail", counted_noop)

    class Acting(Hook):
        name = "acting"

        async def mail(self, session: SessionInfo, txn: Transaction) -> Reply | None:
            calls.append(self.name)
            return None

    pipeline = Pipeline([Quiet(), Acting(), Quiet()])
    assert asyncio.run(pipeline.mail(_session(), _txn())) is None
    assert calls == ["acting"]
