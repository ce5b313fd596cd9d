"""One ``Extensions`` for both sides: what the server's EHLO reply offers, read back by
the client's parser, is exactly what the server accepts MAIL and RCPT parameters for."""

from __future__ import annotations

import pytest

from mailwright.core.reply import Reply
from mailwright.smtp.data import DataLimits
from mailwright.smtp.extensions import Extensions
from mailwright.smtp.server import ServerSettings

from .driver import Driver

PARAMETERS = {  # a MAIL or RCPT parameter -> the extension that allows it
    "MAIL FROM:<a@x.test> SIZE=10": "size",
    "MAIL FROM:<a@x.test> BODY=8BITMIME": "eightbitmime",
    "MAIL FROM:<a@x.test> SMTPUTF8": "smtputf8",
    "MAIL FROM:<a@x.test> RET=HDRS": "dsn",
    "MAIL FROM:<a@x.test> ENVID=x": "dsn",
    "RCPT TO:<b@y.test> NOTIFY=NEVER": "dsn",
}


def offered(ext: Extensions, name: str) -> bool:
    value = getattr(ext, name)
    return value is not None if name == "size" else bool(value)  # SIZE 0: no limit


@pytest.mark.parametrize("on", [True, False])
@pytest.mark.parametrize("hello", [b"EHLO c.test\r\n", b"HELO c.test\r\n"])
def test_the_server_accepts_parameters_of_what_its_ehlo_offers(on: bool, hello: bytes) -> None:
    settings = ServerSettings(
        hostname="mx.test",
        smtputf8=on,
        dsn=on,
        chunking=on,
        data_limits=DataLimits(max_size=1000 if on else 0),
    )
    driver = Driver(settings)
    lines = driver.feed(hello).decode().split("\r\n")[:-1]
    reply = Reply.of(int(lines[0][:3]), None, *(line[4:] for line in lines))
    ext = Extensions.parse(reply) if hello.startswith(b"EHLO") else Extensions()
    assert ext.esmtp == hello.startswith(b"EHLO")
    for command, extension in PARAMETERS.items():
        session = Driver(settings)
        session.feed(hello)
        if command.startswith("RCPT"):
            session.feed(b"MAIL FROM:<a@x.test>\r\n")
        answer = session.replies(command.encode() + b"\r\n")[0]
        assert answer.startswith("250") == offered(ext, extension), (command, answer)
