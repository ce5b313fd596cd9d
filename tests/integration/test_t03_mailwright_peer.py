"""The SMTP agent against Mailwright's own server (a daemon subprocess): BDAT, SMTPUTF8 and DSN
parameters end to end, the peer's SIZE limit, and content that arrives byte for byte (the
server refuses bare CR/LF, so every delivery here also proves none was sent)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.core.delivery import DeliveryResult
from mailwright.core.envelope import BodyType, MailParams, Notify, Ret
from mailwright.core.headers import HeaderList
from mailwright.delivery.smtp import SmtpAgent
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import StoredMessage
from tests.support.daemon import Mailwright, running
from tests.support.delivery_request import MESSAGE, rcpt, request, smtp_hop

UTF8_MESSAGE = (
    "From: ä@x.test\r\nTo: bé@y.test\r\nSubject: héllo\r\n\r\n"
    ".dot first\r\ncafé\r\n..\r\n.\r\nend\r\n"
).encode()


@pytest.fixture(scope="module")
def mw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwright]:
    with running(tmp_path_factory.mktemp("mw")) as daemon:
        yield daemon


def deliver(mw: Mailwright, *args: object, agent: SmtpAgent | None = None, **kw: object):
    agent = agent or SmtpAgent("client.test", None)

    async def main() -> list[DeliveryResult]:
        try:
            hop = smtp_hop("127.0.0.1", mw.port)
            return await agent.deliver(request(hop, *args, **kw))  # type: ignore[arg-type]
        finally:
            await agent.close()

    return asyncio.run(main())


def stored(mw: Mailwright, result: DeliveryResult) -> tuple[StoredMessage, bytes]:
    queue_id = result.reply.lines[0].split()[0]  # "<id> Message accepted for delivery"
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        msg = store.get_message(queue_id)
        assert msg is not None, queue_id
        return msg, b"".join(store.read_body(queue_id))
    finally:
        store.close()


def read_headers(mw: Mailwright, result: DeliveryResult) -> HeaderList:
    queue_id = result.reply.lines[0].split()[0]
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return store.read_headers(queue_id)
    finally:
        store.close()


def body_of(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[1]


def test_bdat_smtputf8_and_dsn_parameters_arrive_intact(mw: Mailwright) -> None:
    params = MailParams(body=BodyType.EIGHT_BIT, smtputf8=True, ret=Ret.HDRS, envid="ënv 1+2")
    results = deliver(
        mw,
        rcpt("bé@y.test", Notify.SUCCESS, Notify.DELAY, orcpt="rfc822;b+2Be@y.test"),
        rcpt("c@y.test", Notify.NEVER),
        message=UTF8_MESSAGE,
        sender="ä@x.test",
        params=params,
        chunk=5,
    )
    assert [r.outcome.value for r in results] == ["delivered", "delivered"]
    assert results[0].details["transfer"] == "BDAT"
    msg, body = stored(mw, results[0])
    env = msg.envelope
    assert str(env.sender) == "ä@x.test"
    assert env.params.smtputf8 and env.params.body is BodyType.EIGHT_BIT
    assert env.params.ret is Ret.HDRS and env.params.envid == "ënv 1+2"
    assert msg.size >= len(UTF8_MESSAGE)
    first, second = env.recipients
    assert str(first.address) == "bé@y.test"
    assert first.notify == frozenset({Notify.SUCCESS, Notify.DELAY})
    assert first.orcpt == "rfc822;b+2Be@y.test"
    assert second.notify == frozenset({Notify.NEVER}) and second.orcpt is None
    assert body == body_of(UTF8_MESSAGE)


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_bare_line_ends_are_sent_as_crlf(mw: Mailwright, chunking: bool) -> None:
    raw = b"Subject: bare\r\n\r\nbare LF\nbare CR\rCRLF\r\n.dot after LF\n..\nno end"
    agent = SmtpAgent("client.test", None, chunking=chunking)
    results = deliver(mw, message=raw, chunk=3, agent=agent)
    assert [r.outcome.value for r in results] == ["delivered"], results[0].reply
    assert results[0].details["transfer"] == ("BDAT" if chunking else "DATA")
    _, body = stored(mw, results[0])
    assert body == b"bare LF\r\nbare CR\r\nCRLF\r\n.dot after LF\r\n..\r\nno end\r\n"


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_lines_longer_than_998_octets_are_folded(mw: Mailwright, chunking: bool) -> None:
    # the peer refuses lines over 1000 octets with CRLF (500 5.5.2): unfolded, this fails
    subject = b"Subject: " + b"s" * 1500
    raw = subject + b"\r\n\r\n" + b"x" * 2500 + b"\r\n." + b"d" * 997 + b"\r\n"
    agent = SmtpAgent("client.test", None, chunking=chunking)
    results = deliver(mw, message=raw, chunk=700, agent=agent)
    assert [r.outcome.value for r in results] == ["delivered"], results[0].reply
    _, body = stored(mw, results[0])
    assert (
        body
        == b"x" * 998
        + b"\r\n "
        + b"x" * 997
        + b"\r\n "
        + b"x" * 505
        + b"\r\n."
        + b"d" * 997
        + b"\r\n"
    )
    headers = read_headers(mw, results[0]).encode()
    assert subject[:998] + b"\r\n " + subject[998:] + b"\r\n" in headers


def test_dot_stuffing_with_data(mw: Mailwright) -> None:
    agent = SmtpAgent("client.test", None, chunking=False)
    results = deliver(mw, message=MESSAGE, chunk=1, agent=agent)
    assert results[0].details["transfer"] == "DATA"
    _, body = stored(mw, results[0])
    assert body == body_of(MESSAGE)


def test_message_above_the_peer_size_limit_fails_without_sending(tmp_path: Path) -> None:
    with running(tmp_path, {"server": {"max_message_size": 2000}}) as small:
        big = MESSAGE.replace(b"last line\r\n", (b"y" * 70 + b"\r\n") * 40)
        results = deliver(small, message=big)
        assert [r.outcome.value for r in results] == ["failed"]
        reply = results[0].reply
        assert (reply.code, reply.status) == (552, "5.3.4")
        assert "2000 octets" in reply.text
        ok = deliver(small)  # a small one still goes
        assert [r.outcome.value for r in ok] == ["delivered"]
        store = SqliteQueueStore(Path(small.config["queue"]["directory"]) / "queue.db")
        store.open_for_reading()
        try:
            assert store.count_messages() == 1
        finally:
            store.close()
