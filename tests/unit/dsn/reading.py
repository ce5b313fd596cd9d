"""Reading a report back: the ``email`` package's view of it and the raw bytes of each part."""

from __future__ import annotations

import email
import email.parser
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage

from mailwright.queue.store import NewMessage


def report_bytes(message: NewMessage) -> bytes:
    return message.headers.encode() + b"\r\n" + b"".join(message.body.chunks())


def parse(message: NewMessage) -> EmailMessage:
    parsed = email.message_from_bytes(report_bytes(message), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@dataclass
class RawPart:
    headers: bytes  # the part's header section, without the empty line
    content: bytes  # exactly what lies between the empty line and the next delimiter


def raw_parts(message: NewMessage) -> list[RawPart]:
    """The parts of the multipart/report as bytes, split by hand at the boundary."""
    parsed = parse(message)
    boundary = parsed.get_param("boundary")
    assert isinstance(boundary, str)
    data = report_bytes(message)
    body = data[data.index(b"\r\n\r\n") + 4 :]
    pieces = body.split(b"\r\n--" + boundary.encode())
    assert pieces[-1] == b"--\r\n", "the report ends with the close delimiter"
    parts = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        head, _, content = piece[2:].partition(b"\r\n\r\n")
        parts.append(RawPart(head, content))
    return parts


def status_blocks(message: NewMessage) -> list[dict[str, str]]:
    """The fields of the delivery-status part, one dict per block, as ``email`` reads them.

    ``message/delivery-status`` is parsed by ``email`` itself (a list of header blocks);
    ``email`` does not know ``message/global-delivery-status``, so its blocks are
    parsed one by one with ``email``'s header parser (UTF-8 allowed, RFC 6533).
    """
    part = parse(message).get_payload()[1]
    assert isinstance(part, EmailMessage)
    if part.get_content_type() == "message/delivery-status":
        blocks = part.get_payload()
        assert isinstance(blocks, list)
        return [{k: str(v) for k, v in block.items()} for block in blocks]
    assert part.get_content_type() == "message/global-delivery-status"
    text = raw_parts(message)[1].content.decode("utf-8")
    parser = email.parser.HeaderParser(policy=email.policy.default)
    return [
        {k: str(v) for k, v in parser.parsestr(block + "\r\n").items()}
        for block in text.split("\r\n\r\n")
        if block.strip()
    ]


def text_part(message: NewMessage) -> str:
    part = parse(message).get_payload()[0]
    assert isinstance(part, EmailMessage)
    assert part.get_content_type() == "text/plain"
    content = part.get_content()
    assert isinstance(content, str)
    return content
