"""The TLS comment and protocol keyword of Received: (RFC 3848)."""

from __future__ import annotations

from mailwright.core.trace import protocol_name, received


def test_tls_comment_keeps_its_words_and_cannot_break_out() -> None:
    header = received(
        helo="client.test",
        client_name="",
        client_address="192.0.2.1",
        hostname="mx.test",
        protocol=protocol_name(tls=True, auth=True),
        queue_id="Q1",
        recipient=None,
        tls="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384) (evil\r\n",
    )
    lines = header.encode().decode().split("\r\n")
    assert lines[1] == "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384? ?evil)"
    assert lines[2].startswith("\tby mx.test (Mailwright) with ESMTPSA id Q1")
