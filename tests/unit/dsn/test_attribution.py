"""Who said it: a report quotes a server only for a reply the server really sent.

Replies read off the wire (``smtp.reply.ReplyParser``) are marked ``from_peer``; every
reply Mailwright writes itself (a refused connection, a timeout, an expired message) is
not, and a report gives it as the reason, never as "the mail server said".
"""

from __future__ import annotations

import pytest

from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.reply import Reply
from mailwright.delivery.smtp import as_transient, with_status
from mailwright.dsn import Action, Diagnostic, RecipientReport, ReportKind, build_report, said
from tests.unit.dsn.builders import HOST, NOW, make_original, peer_reply, rcpt
from tests.unit.dsn.reading import status_blocks, text_part

MX = "mx.example.org [192.0.2.25]"
REFUSED = "connect to mx.example.org [192.0.2.25]:25: Connection refused"


def test_only_the_parser_marks_a_reply_as_the_peers() -> None:
    heard = peer_reply(b"451-4.3.0 busy\r\n451 4.3.0 try later\r\n")
    assert heard.from_peer
    written = Reply.of(451, "4.3.0", "busy", "try later")
    assert not written.from_peer
    assert heard == written  # the same reply either way; only the author differs
    assert with_status(peer_reply(b"550 no\r\n")).from_peer  # X.0.0 added, still theirs
    assert as_transient(peer_reply(b"554 5.7.1 go away\r\n")).from_peer


@pytest.mark.parametrize(
    ("reply", "type_", "expected"),
    [
        (peer_reply(b"550 5.1.1 no such user\r\n"), "smtp", "smtp; 550 5.1.1 no such user"),
        (peer_reply(b"452 4.2.2 over quota\r\n"), "lmtp", "lmtp; 452 4.2.2 over quota"),
        (Reply.of(451, "4.4.1", REFUSED), "smtp", f"X-Mailwright; 451 4.4.1 {REFUSED}"),
        (Reply.of(451, "4.4.1", REFUSED), "lmtp", f"X-Mailwright; 451 4.4.1 {REFUSED}"),
        (Reply.of(550, "5.1.1", "unknown user"), "x-unix", "x-unix; 550 5.1.1 unknown user"),
    ],
)
def test_a_diagnostic_is_a_servers_reply_only_when_a_server_sent_it(
    reply: Reply, type_: str, expected: str
) -> None:
    assert str(Diagnostic.from_reply(reply, type_)) == expected


def test_said_names_the_speaker_of_a_peers_reply_only() -> None:
    assert said(peer_reply(b"451 4.3.0 try later\r\n"), MX) == f"{MX} said: 451 4.3.0 try later"
    assert said(peer_reply(b"421 closing\r\n"), "") == "the server said: 421 closing"
    assert said(Reply.of(451, "4.4.1", REFUSED), MX) == REFUSED


def delay_report(reply: Reply) -> tuple[str, dict[str, str]]:
    bob = rcpt("bob@example.org")
    result = DeliveryResult(0, Outcome.DEFERRED, reply, MX)
    line = RecipientReport.from_delivery(
        DeliveryRecipient(0, "bob@example.org"), result, attempted_at=NOW
    )
    assert line.action is Action.DELAYED
    report = build_report(
        make_original([bob]), ReportKind.DELAY, [line], reporting_mta=HOST, now=NOW
    )
    assert report is not None
    return " ".join(text_part(report).split()), status_blocks(report)[1]


def test_a_refused_connection_is_our_reason_not_the_servers_words() -> None:
    text, block = delay_report(Reply.of(451, "4.4.1", REFUSED))
    assert (
        f"<bob@example.org>: delivery is delayed (status 4.4.1). Reason: 451 4.4.1 {REFUSED}"
        in text
    )
    assert "said" not in text
    assert block["Diagnostic-Code"] == f"X-Mailwright; 451 4.4.1 {REFUSED}"
    assert "Remote-MTA" not in block  # no server reported anything


def test_a_servers_reply_is_quoted_as_its_own() -> None:
    text, block = delay_report(peer_reply(b"450 4.2.1 mailbox busy\r\n"))
    assert f"The mail server {MX} said: 450 4.2.1 mailbox busy" in text
    assert block["Diagnostic-Code"] == "smtp; 450 4.2.1 mailbox busy"
    assert block["Remote-MTA"] == "dns; mx.example.org"
