"""The LMTP agent against a real Dovecot LMTP server writing Maildirs: per-recipient outcomes
(unknown user, over quota at RCPT and at end of data), over TCP and a Unix socket, BDAT and DATA."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mailwright.core.delivery import DeliveryResult
from mailwright.delivery.lmtp import LmtpAgent
from mailwright.routing.nexthop import NextHop, Transport
from tests.support import dovecot
from tests.support.delivery_request import MESSAGE, request
from tests.support.dovecot import Dovecot
from tests.support.peers import peer

pytestmark = peer("Dovecot LMTP", dovecot.available(), "needs root and dovecot-core, dovecot-lmtpd")

BIG = MESSAGE.replace(b"last line\r\n", b"x" * 70 + b"\r\n") * 40  # about 3.5 KB


@pytest.fixture(scope="module")
def dv() -> Iterator[Dovecot]:
    with Dovecot() as server:
        yield server


def hop(dv: Dovecot, unix: bool) -> NextHop:
    if unix:
        return NextHop(Transport.LMTP, socket_path=dv.socket_path)
    return NextHop(Transport.LMTP, host="127.0.0.1", port=dv.port, mx=False)


def deliver(agent: LmtpAgent, *args: object, **kw: object) -> list[DeliveryResult]:
    async def main() -> list[DeliveryResult]:
        try:
            return await agent.deliver(request(*args, **kw))  # type: ignore[arg-type]
        finally:
            await agent.close()

    return asyncio.run(main())


def summary(results: list[DeliveryResult]) -> list[tuple[str, int, str | None, str]]:
    return [(r.outcome.value, r.reply.code, r.reply.status, r.details["stage"]) for r in results]


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_per_recipient_outcomes_and_mail_in_the_maildir(
    dv: Dovecot, unix: bool, chunking: bool
) -> None:
    before = {u: len(dv.delivered(u)) for u in ("alice", "bob")}
    agent = LmtpAgent("client.test", None, chunking=chunking)
    rcpts = ["alice@example.test", "full@example.test", "bob@example.test", "nobody@example.test"]
    results = deliver(agent, hop(dv, unix), *rcpts)
    assert summary(results) == [
        ("delivered", 250, "2.0.0", "end of data"),
        ("failed", 552, "5.2.2", "RCPT TO"),
        ("delivered", 250, "2.0.0", "end of data"),
        ("failed", 550, "5.1.1", "RCPT TO"),
    ]
    assert "Quota exceeded" in results[1].reply.text
    assert "<alice@example.test>" in results[0].reply.text  # each reply names its recipient
    assert "<bob@example.test>" in results[2].reply.text
    assert results[0].remote_mta == (dv.socket_path if unix else "127.0.0.1 [127.0.0.1]")
    for user in ("alice", "bob"):
        mails = dv.delivered(user)
        assert len(mails) == before[user] + 1
        stored = mails[-1].replace(b"\r\n", b"\n")
        assert stored.endswith(MESSAGE.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))
        assert stored.startswith(b"Return-Path: <a@x.test>\n")  # Dovecot saw our MAIL FROM
    assert dv.delivered("full") == []


def test_over_quota_at_end_of_data_is_that_recipient_only(dv: Dovecot) -> None:
    agent = LmtpAgent("client.test", None)
    results = deliver(
        agent, hop(dv, False), "alice@example.test", "small@example.test", message=BIG
    )
    assert summary(results) == [
        ("delivered", 250, "2.0.0", "end of data"),
        ("failed", 552, "5.2.2", "end of data"),
    ]
    assert dv.delivered("small") == []


def test_quota_tempfail_stays_queued() -> None:
    with Dovecot(quota_tempfail=True) as dv:
        agent = LmtpAgent("client.test", None)
        results = deliver(
            agent, hop(dv, True), "small@example.test", "bob@example.test", message=BIG
        )
        assert summary(results) == [
            ("deferred", 452, "4.2.2", "end of data"),
            ("delivered", 250, "2.0.0", "end of data"),
        ]
        assert len(dv.delivered("bob")) == 1


def test_several_messages_over_one_reused_session(dv: Dovecot) -> None:
    before = len(dv.delivered("alice"))
    agent = LmtpAgent("client.test", None)

    async def main() -> list[str]:
        out = []
        for _ in range(3):
            results = await agent.deliver(request(hop(dv, True), "alice@example.test"))
            out += [r.outcome.value for r in results]
        assert agent.pool.reused == 2
        await agent.close()
        return out

    assert asyncio.run(main()) == ["delivered"] * 3
    assert len(dv.delivered("alice")) == before + 3
