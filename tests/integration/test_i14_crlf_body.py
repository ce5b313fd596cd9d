"""A body received over SMTP carries the session's word that its line breaks are all
CRLF (``Spool.crlf_lines``), which lets its first delivery skip the client's own check
(``smtp.encoder.CrlfLines``): under either policy for bare line ends, since the default
refuses them and ``normalize`` rewrites them. Real sockets on loopback, an in-process
``Edge``, Python's smtplib as the client.
"""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from mailwright.config.schema import Listener, Settings
from mailwright.edge.context import EdgeContext
from mailwright.edge.listener import Edge
from mailwright.manager.fresh import FreshMessages
from mailwright.policy.hooks import Pipeline
from mailwright.queue.spool import Spool
from mailwright.queue.store import NewMessage
from mailwright.smtp.encoder import CrlfLines
from tests.support.daemon import free_port


def _send(port: int, body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@client.test", ["b@mx.test"], body)


async def _received(policy: str, body: bytes, tmp_path: Path, fresh: FreshMessages) -> NewMessage:
    settings = Settings(
        hostname="mx.test",
        listeners=[Listener(address="127.0.0.1", port=free_port())],
        queue={"directory": tmp_path / "q"},  # type: ignore[arg-type]
        server={"bare_line_endings": policy},  # type: ignore[arg-type]
        routing={"local_domains": ["mx.test"]},  # type: ignore[arg-type]
    )
    queued: list[NewMessage] = []

    async def enqueue(message: NewMessage) -> None:
        # as the daemon does after the commit: the spool is closed once this returns
        assert isinstance(message.body, Spool) and message.body.crlf_lines
        fresh.remember(message)
        queued.append(message)

    edge = Edge(EdgeContext(settings, Pipeline([]), enqueue, tmp_path))
    await edge.start()
    try:
        await asyncio.to_thread(_send, edge.addresses[0][1], body)
    finally:
        await edge.stop()
    (message,) = queued
    return message


@pytest.mark.parametrize("policy", ["reject", "normalize"])
def test_a_body_received_over_smtp_is_handed_to_its_first_delivery_as_crlf_only(
    policy: str, tmp_path: Path
) -> None:
    body = b"Subject: t\r\n\r\none\r\ntwo\r\n"
    fresh = FreshMessages()
    message = asyncio.run(asyncio.wait_for(_received(policy, body, tmp_path, fresh), 20))
    loaded = fresh.take(message.queue_id)
    assert loaded is not None and type(loaded[2]) is CrlfLines
    assert loaded[2] == b"one\r\ntwo\r\n"
