"""Build ``DeliveryRequest``s for delivery agent tests from a raw message."""

from __future__ import annotations

from collections.abc import Iterator

from mailwright.core.delivery import DeliveryRecipient
from mailwright.core.envelope import MailParams, Notify
from mailwright.core.headers import HeaderParser
from mailwright.delivery.agent import DeliveryRequest
from mailwright.routing.nexthop import NextHop, Transport

MESSAGE = (
    b"From: a@x.test\r\nTo: b@y.test\r\nSubject: test\r\nMessage-ID: <t03@x.test>\r\n"
    b"\r\nHello\r\n.a line with a leading dot\r\n..two dots\r\n.\r\nlast line\r\n"
)


def smtp_hop(host: str, port: int | None = None, mx: bool = False) -> NextHop:
    return NextHop(Transport.SMTP, host=host, port=port, mx=mx)


def request(
    hop: NextHop,
    *recipients: str | DeliveryRecipient,
    message: bytes = MESSAGE,
    sender: str = "a@x.test",
    params: MailParams | None = None,
    chunk: int = 4096,
    queue_id: str = "T03TEST",
) -> DeliveryRequest:
    parser = HeaderParser()
    body = parser.feed(message)
    body += parser.close()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), chunk):
            yield body[i : i + chunk]

    rcpts = [
        r if isinstance(r, DeliveryRecipient) else DeliveryRecipient(i, r)
        for i, r in enumerate(recipients or ("b@y.test",))
    ]
    for i, r in enumerate(rcpts):
        r.index = i
    head = parser.headers.encode() + b"\r\n"
    return DeliveryRequest(
        queue_id=queue_id,
        sender=sender,
        params=params or MailParams(),
        recipients=rcpts,
        next_hop=hop,
        headers=parser.headers,
        body=chunks,
        size=len(head) + len(body),
    )


def rcpt(address: str, *notify: Notify, orcpt: str | None = None) -> DeliveryRecipient:
    return DeliveryRecipient(0, address, orcpt, frozenset(notify) if notify else None)
