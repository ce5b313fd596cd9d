"""The SMTP and LMTP delivery agents against Postfix's smtp-sink: outcomes, failure injection,
MX fallback, timeouts, connection reuse, dot-stuffing and the 8BITMIME/DSN/SMTPUTF8 rules."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailwright.core.delivery import DeliveryResult
from mailwright.core.envelope import BodyType, MailParams, Notify, Ret
from mailwright.delivery.agent import DeliveryRequest
from mailwright.delivery.lmtp import LmtpAgent
from mailwright.delivery.session import ClientTimeouts
from mailwright.delivery.smtp import SmtpAgent
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.resolver import MailHost
from tests.support import smtp_sink
from tests.support.daemon import free_port
from tests.support.delivery_request import MESSAGE, rcpt, request, smtp_hop
from tests.support.peers import peer
from tests.support.smtp_sink import SmtpSink
from tests.support.static_resolver import StaticResolver

pytestmark = peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")

T = TypeVar("T")
FAST = ClientTimeouts(connect=2, greeting=2, helo=2, mail=2, rcpt=2, data_init=2, data_end=2)
EIGHT_BIT_TEXT = (
    "From: a@x.test\r\nTo: b@y.test\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    "\r\ncafé crème \r\n.dot line\r\n"
).encode()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Callable[..., SmtpSink]]:
    started: list[SmtpSink] = []

    def start(*options: str, **kw: Any) -> SmtpSink:
        sink = SmtpSink(tmp_path / f"sink{len(started)}", *options, **kw).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


async def deliver_once(agent: SmtpAgent, *args: Any, **kw: Any) -> list[DeliveryResult]:
    """Deliver one request (given, or built from ``request``'s arguments), then close."""
    req = args[0] if isinstance(args[0], DeliveryRequest) else request(*args, **kw)
    try:
        return await agent.deliver(req)
    finally:
        await agent.close()


def outcomes(results: list[DeliveryResult]) -> list[str]:
    return [r.outcome.value for r in results]


def mx_resolver(*addresses: str) -> StaticResolver:
    hosts = [MailHost(f"mx{i + 1}.example.test", a, 10 * (i + 1)) for i, a in enumerate(addresses)]
    return StaticResolver(mx={"example.test": hosts})


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ---- delivery and content ---------------------------------------------------------------
def test_delivers_with_dsn_parameters_and_dot_stuffed_lines_intact(sinks) -> None:
    sink = sinks()
    agent = SmtpAgent("client.test", mx_resolver("127.0.0.1"))
    params = MailParams(body=BodyType.EIGHT_BIT, ret=Ret.HDRS, envid="env 1")
    results = run(
        deliver_once(
            agent,
            smtp_hop("example.test", sink.port, mx=True),
            rcpt("b@y.test", Notify.SUCCESS, Notify.FAILURE, orcpt="rfc822;b@y.test"),
            "c@y.test",
            params=params,
            chunk=7,  # chunk boundaries fall inside lines and between CR and LF
        )
    )
    assert outcomes(results) == ["delivered", "delivered"]
    assert results[0].reply.code == 250 and results[0].reply.status == "2.0.0"
    assert results[0].remote_mta == "mx1.example.test [127.0.0.1]"
    (msg,) = sink.messages()
    assert msg.helo == "client.test"
    assert msg.mail_args == "<a@x.test> BODY=8BITMIME RET=HDRS ENVID=env+201"
    assert msg.rcpt_args == [
        "<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test",
        "<c@y.test>",
    ]
    assert msg.content == MESSAGE.replace(b"\r\n", b"\n")


def test_connection_reuse_then_close_quits(sinks) -> None:
    sink = sinks()
    agent = SmtpAgent("client.test", None, idle_timeout=0.2)
    hop = smtp_hop("127.0.0.1", sink.port)

    async def main() -> list[str]:
        got = []
        for _ in range(5):
            got += outcomes(await agent.deliver(request(hop)))
        assert agent.pool.reused == 4
        assert agent.pool.idle_count(hop.key) == 1
        await agent.close()
        return got

    assert run(main()) == ["delivered"] * 5
    wait_until(lambda: sink.counters().get("quit") == 1)
    assert sink.counters()["mesg"] == 5
    assert len(sink.messages()) == 5


def test_idle_session_closed_after_the_idle_timeout(sinks) -> None:
    sink = sinks()
    agent = SmtpAgent("client.test", None, idle_timeout=0.1)

    async def main() -> None:
        await agent.deliver(request(smtp_hop("127.0.0.1", sink.port)))
        assert agent.pool.idle_count() == 1
        while agent.pool.idle_count():  # the pool's own timer empties it
            await asyncio.sleep(0.01)
        await agent.close()

    run(main())
    wait_until(lambda: sink.counters().get("quit") == 1)


def test_reused_connection_that_fails_is_retried_on_a_fresh_one(sinks) -> None:
    sink = sinks("-Q", "RSET")  # 421 and disconnect on RSET: the reused session is dead
    agent = SmtpAgent("client.test", None)
    hop = smtp_hop("127.0.0.1", sink.port)

    async def main() -> list[str]:
        first = await agent.deliver(request(hop))
        second = await agent.deliver(request(hop))
        assert agent.pool.reused == 1
        await agent.close()
        return outcomes(first + second)

    assert run(main()) == ["delivered", "delivered"]
    wait_until(lambda: len(sink.messages()) == 2)


# ---- failure injection ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "outcome", "code", "status", "stage"),
    [
        (["-r", "RCPT"], "deferred", 450, "4.3.0", "RCPT TO"),
        (["-f", "RCPT"], "failed", 500, "5.3.0", "RCPT TO"),
        (["-B", "550 5.1.1 No such user", "-f", "RCPT"], "failed", 550, "5.1.1", "RCPT TO"),
        (["-b", "452 4.2.2 Mailbox full", "-r", "RCPT"], "deferred", 452, "4.2.2", "RCPT TO"),
        (["-f", "MAIL"], "failed", 500, "5.3.0", "MAIL FROM"),
        (["-f", "DATA"], "failed", 500, "5.3.0", "DATA"),
        (["-f", "."], "failed", 500, "5.3.0", "end of data"),
        (["-r", "."], "deferred", 450, "4.3.0", "end of data"),
    ],
)
def test_replies_map_to_outcomes_per_recipient(
    sinks, options, outcome, code, status, stage
) -> None:
    sink = sinks(*options)
    agent = SmtpAgent("client.test", None)
    results = run(deliver_once(agent, smtp_hop("127.0.0.1", sink.port), "b@y.test", "c@y.test"))
    assert outcomes(results) == [outcome, outcome]
    for r in results:
        assert (r.reply.code, r.reply.status, r.details["stage"]) == (code, status, stage)
        assert r.remote_mta == "127.0.0.1 [127.0.0.1]"
    if options[0] == "-B":
        assert results[0].reply.text == "No such user"


def test_disconnect_after_data_defers_everyone(sinks) -> None:
    sink = sinks("-q", "DATA")
    agent = SmtpAgent("client.test", None)
    results = run(deliver_once(agent, smtp_hop("127.0.0.1", sink.port), "b@y.test", "c@y.test"))
    assert outcomes(results) == ["deferred", "deferred"]
    assert results[0].reply.status == "4.4.2"
    assert "Lost connection with 127.0.0.1 [127.0.0.1]" in results[0].reply.text


def test_421_at_rcpt_moves_on_to_the_next_mx(sinks) -> None:
    port = free_port()
    bad = sinks("-Q", "RCPT", address="127.0.0.2", port=port)
    good = sinks(address="127.0.0.1", port=port)
    agent = SmtpAgent("client.test", mx_resolver("127.0.0.2", "127.0.0.1"))
    results = run(deliver_once(agent, smtp_hop("example.test", port, mx=True)))
    assert outcomes(results) == ["delivered"]
    assert results[0].remote_mta == "mx2.example.test [127.0.0.1]"
    assert len(good.messages()) == 1 and bad.messages() == []


def test_dead_host_then_a_good_mx(sinks) -> None:
    good = sinks()  # nothing listens on 127.0.0.2 at that port: connection refused
    agent = SmtpAgent("client.test", mx_resolver("127.0.0.2", "127.0.0.1"), timeouts=FAST)
    results = run(deliver_once(agent, smtp_hop("example.test", good.port, mx=True)))
    assert outcomes(results) == ["delivered"]
    assert results[0].remote_mta == "mx2.example.test [127.0.0.1]"


@pytest.fixture
def hanging() -> Iterator[tuple[str, int]]:
    """A peer that accepts connections (the kernel does) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.3", 0))
        s.listen(16)
        yield "127.0.0.3", s.getsockname()[1]


def test_a_host_that_hangs_past_the_greeting_timeout_then_a_good_mx(sinks, hanging) -> None:
    address, port = hanging
    good = sinks(address="127.0.0.1", port=port)
    timeouts = ClientTimeouts(connect=2, greeting=0.3)
    agent = SmtpAgent("client.test", mx_resolver(address, "127.0.0.1"), timeouts=timeouts)
    started = time.monotonic()
    results = run(deliver_once(agent, smtp_hop("example.test", port, mx=True)))
    assert outcomes(results) == ["delivered"]
    assert time.monotonic() - started < 5
    assert len(good.messages()) == 1


def test_all_hosts_fail_deferred_with_the_last_error(hanging) -> None:
    address, port = hanging
    timeouts = ClientTimeouts(connect=2, greeting=0.3)
    agent = SmtpAgent("client.test", mx_resolver("127.0.0.2", address), timeouts=timeouts)
    results = run(deliver_once(agent, smtp_hop("example.test", port, mx=True), "b@y.test", "c@y"))
    assert outcomes(results) == ["deferred", "deferred"]
    reply = results[0].reply
    assert reply.code == 451 and reply.status == "4.4.2"
    assert "Timeout after 0.3s" in reply.text and "greeting" in reply.text
    assert results[0].remote_mta == "mx2.example.test [127.0.0.3]"


def test_data_reply_timeout_defers(sinks) -> None:
    # without -p smtp-sink holds the pipelined MAIL/RCPT replies back with the DATA reply
    sink = sinks("-p", "-W", "DATA:3")
    agent = SmtpAgent("client.test", None, timeouts=ClientTimeouts(data_init=0.3))
    results = run(deliver_once(agent, smtp_hop("127.0.0.1", sink.port)))
    assert outcomes(results) == ["deferred"]
    assert results[0].reply.status == "4.4.2"
    assert "DATA" in results[0].reply.text and "Timeout" in results[0].reply.text


def test_final_reply_timeout_defers_without_trying_the_next_mx(sinks) -> None:
    port = free_port()
    slow = sinks("-W", ".:3", address="127.0.0.1", port=port)
    other = sinks(address="127.0.0.2", port=port)
    timeouts = ClientTimeouts(data_end=0.3)
    agent = SmtpAgent("client.test", mx_resolver("127.0.0.1", "127.0.0.2"), timeouts=timeouts)
    results = run(deliver_once(agent, smtp_hop("example.test", port, mx=True)))
    assert outcomes(results) == ["deferred"]
    assert "end of data" in results[0].reply.text
    # the first host may have the message: sending it elsewhere too would duplicate it
    assert other.counters().get("mesg", 0) == 0
    assert slow is not None


# ---- what the peer offers ---------------------------------------------------------------
def test_old_server_helo_fallback_and_8bit_converted_to_quoted_printable(sinks) -> None:
    sink = sinks("-e")  # no ESMTP: EHLO is answered 500
    agent = SmtpAgent("client.test", None)
    params = MailParams(body=BodyType.EIGHT_BIT)
    results = run(
        deliver_once(agent, smtp_hop("127.0.0.1", sink.port), message=EIGHT_BIT_TEXT, params=params)
    )
    assert outcomes(results) == ["delivered"]
    assert results[0].details["conversion"] == "8bit to quoted-printable"
    (msg,) = sink.messages()
    assert msg.proto == "SMTP" and msg.mail_args == "<a@x.test>"
    assert b"Content-Transfer-Encoding: quoted-printable\n" in msg.content
    assert msg.content.endswith(b"\n\ncaf=C3=A9 cr=C3=A8me=20\n.dot line\n")
    assert msg.content.isascii()


def test_8bit_that_cannot_be_converted_fails_without_sending(sinks) -> None:
    sink = sinks("-8")
    multipart = (
        b"From: a@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
        b"\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncaf\xc3\xa9\r\n--b--\r\n"
    )
    agent = SmtpAgent("client.test", None)
    params = MailParams(body=BodyType.EIGHT_BIT)
    results = run(
        deliver_once(agent, smtp_hop("127.0.0.1", sink.port), message=multipart, params=params)
    )
    assert outcomes(results) == ["failed"]
    assert (results[0].reply.code, results[0].reply.status) == (554, "5.6.3")
    assert "8BITMIME" in results[0].reply.text
    assert sink.messages() == []


def test_declared_8bit_that_is_ascii_goes_as_7bit(sinks) -> None:
    sink = sinks("-8")
    agent = SmtpAgent("client.test", None)
    params = MailParams(body=BodyType.EIGHT_BIT)
    results = run(deliver_once(agent, smtp_hop("127.0.0.1", sink.port), params=params))
    assert outcomes(results) == ["delivered"]
    assert sink.messages()[0].content == MESSAGE.replace(b"\r\n", b"\n")


def test_smtputf8_needed_but_not_offered_fails(sinks) -> None:
    sink = sinks()
    agent = SmtpAgent("client.test", None)
    params = MailParams(smtputf8=True)
    results = run(deliver_once(agent, smtp_hop("127.0.0.1", sink.port), "bé@y.test", params=params))
    assert outcomes(results) == ["failed"]
    assert (results[0].reply.code, results[0].reply.status) == (553, "5.6.7")
    assert sink.messages() == []


def test_peer_without_dsn_relayed_when_success_was_asked_for(sinks) -> None:
    sink = sinks("-N")
    agent = SmtpAgent("client.test", None)
    results = run(
        deliver_once(
            agent,
            smtp_hop("127.0.0.1", sink.port),
            rcpt("b@y.test", Notify.SUCCESS, orcpt="rfc822;b@y.test"),
            rcpt("c@y.test", Notify.FAILURE),
            "d@y.test",
            params=MailParams(ret=Ret.FULL, envid="x"),
        )
    )
    assert outcomes(results) == ["relayed", "delivered", "delivered"]
    (msg,) = sink.messages()
    assert msg.mail_args == "<a@x.test>"
    assert msg.rcpt_args == ["<b@y.test>", "<c@y.test>", "<d@y.test>"]


def test_without_pipelining_step_by_step(sinks) -> None:
    sink = sinks("-p")
    agent = SmtpAgent("client.test", None)
    results = run(deliver_once(agent, smtp_hop("127.0.0.1", sink.port), "b@y.test", "c@y.test"))
    assert outcomes(results) == ["delivered", "delivered"]
    assert sink.messages()[0].rcpt_args == ["<b@y.test>", "<c@y.test>"]


def test_null_sender(sinks) -> None:
    sink = sinks()
    agent = SmtpAgent("client.test", None)
    results = run(deliver_once(agent, smtp_hop("127.0.0.1", sink.port), sender=""))
    assert outcomes(results) == ["delivered"]
    assert sink.messages()[0].mail_args == "<>"


# ---- LMTP ---------------------------------------------------------------------------------
@pytest.mark.parametrize("unix", [False, True])
def test_lmtp_to_smtp_sink(sinks, unix: bool) -> None:
    sink = sinks("-L", unix=unix)
    if unix:
        hop = NextHop(Transport.LMTP, socket_path=sink.socket_path)
    else:
        hop = NextHop(Transport.LMTP, host="127.0.0.1", port=sink.port, mx=False)
    agent = LmtpAgent("client.test", None)
    results = run(deliver_once(agent, hop, "b@y.test", "c@y.test"))
    assert outcomes(results) == ["delivered", "delivered"]
    expected = sink.socket_path if unix else "127.0.0.1 [127.0.0.1]"
    assert results[0].remote_mta == expected
    (msg,) = sink.messages()
    assert msg.proto == "LMTP" and msg.content == MESSAGE.replace(b"\r\n", b"\n")


def big_body(total: int) -> Callable[[], Iterator[bytes]]:
    line = b"0123456789" * 7 + b"\r\n"
    block = line * (65536 // len(line))

    def chunks() -> Iterator[bytes]:
        for _ in range(total // len(block)):
            yield block

    return chunks


def test_large_message_is_streamed_in_bounded_memory(sinks) -> None:
    import tracemalloc

    sink = sinks(dump=False)
    total = 32 * 1024 * 1024
    req = request(smtp_hop("127.0.0.1", sink.port))
    req.body = big_body(total)
    req.size = total
    agent = SmtpAgent("client.test", None)
    tracemalloc.start()
    try:
        results = run(deliver_once(agent, req))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcomes(results) == ["delivered"]
    assert peak < 4 * 1024 * 1024, peak  # a few write buffers, never the message


def test_peer_that_stops_reading_mid_data_hits_the_data_block_timeout() -> None:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 stall.test\r\n")
        while line := await reader.readline():
            if line.startswith(b"EHLO"):
                writer.write(b"250-stall.test\r\n250 PIPELINING\r\n")
            elif line.startswith(b"DATA"):
                writer.write(b"354 go\r\n")
                await writer.drain()
                await asyncio.Event().wait()  # never read again
            else:
                writer.write(b"250 ok\r\n")

    async def main() -> list[DeliveryResult]:
        server = await asyncio.start_server(session, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        req = request(smtp_hop("127.0.0.1", port))
        req.body = big_body(256 * 1024 * 1024)  # far more than socket buffers hold
        agent = SmtpAgent("client.test", None, timeouts=ClientTimeouts(data_block=0.5))
        try:
            return await deliver_once(agent, req)
        finally:
            server.close()

    started = time.monotonic()
    results = run(main())
    assert outcomes(results) == ["deferred"]
    assert results[0].reply.status == "4.4.2"
    assert "Timeout after 0.5s sending" in results[0].reply.text
    assert time.monotonic() - started < 10
