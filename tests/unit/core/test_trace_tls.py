"""The TLS comment and protocol keyword of Received: (RFC 3848)."""

from __future__ import annotations

import email.utils

from mailwright.core.headers import Header
from mailwright.core.trace import protocol_name, received


def from_client(recipient: str | None, when: float | None = None, tls: str = "") -> Header:
    """The ``Received:`` of a message from 192.0.2.1: plain SMTP, or with ``tls`` (the
    comment) and AUTH."""
    return received(
        helo="client.test",
        client_name="",
        client_address="192.0.2.1",
        hostname="mx.test",
        protocol=protocol_name(tls=bool(tls), auth=bool(tls)),
        queue_id="Q1",
        recipient=recipient,
        when=when,
        tls=tls,
    )


def test_tls_comment_keeps_its_words_and_cannot_break_out() -> None:
    header = from_client(None, tls="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384) (evil\r\n")
    lines = header.encode().decode().split("\r\n")
    assert lines[1] == "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384? ?evil)"
    assert lines[2].startswith("\tby mx.test (Mailwright) with ESMTPSA id Q1")


def test_the_date_follows_a_semicolon_with_and_without_a_recipient() -> None:
    # RFC 5322 3.6.7: received = "Received:" [received-token...] ";" date-time
    for recipient in (None, "b@y.test"):
        header = from_client(recipient, when=0.0)
        tokens, semicolon, date = header.text.rpartition(";")
        assert semicolon == ";" and email.utils.parsedate_to_datetime(date.strip()).timestamp() == 0
        assert tokens.endswith("id Q1" if recipient is None else "for <b@y.test>")


def test_local_submission_gets_sendmails_form() -> None:
    # issue 12 item 16: no "from" clause (no client host), no "with" (protocol local)
    def local(user: str) -> str:
        header = received(
            helo="",
            client_name=f"{user}@localhost",
            client_address="",
            hostname="mx.test",
            protocol=protocol_name(local=True),
            queue_id="Q1",
            recipient=None,
            local_user=user,
            when=0.0,
        )
        return header.encode().decode()

    assert local("nobody").startswith(
        "Received: (from nobody@localhost)\r\n\tby mx.test (Mailwright) id Q1;\r\n\t"
    )
    assert local("a(b)").startswith("Received: (from a?b?@localhost)\r\n")
    assert local("").startswith("Received: (from localhost)\r\n")


def test_the_date_is_the_second_of_when_each_time() -> None:
    def date_of(when: float) -> str:
        return from_client("b@y.test", when).text.rpartition(";")[2].strip()

    # one format per second is kept: the same second gives the same text, another second
    # its own, and going back to an earlier second is not served the later one
    for when in (1_700_000_000.2, 1_700_000_000.9, 1_700_000_001.0, 1_700_000_000.5, 0.0):
        assert date_of(when) == email.utils.formatdate(int(when), localtime=True)
