"""dsn.notices: the reports a message's results call for, built without a queue."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.reply import Reply
from mailwright.dsn import Action, RecipientReport, ReportKind
from mailwright.dsn.notices import (
    MessageReports,
    Reporter,
    dsn_reason,
    expired,
    report_action,
)
from mailwright.queue.store import NewMessage, Origin, RecipientState, StoredRecipient
from tests.unit.dsn.builders import ARRIVED, HOST, NOW, make_original, peer_reply
from tests.unit.dsn.reading import parse, status_blocks, text_part

MX = "mx.example.org [192.0.2.25]"
REPORTER = Reporter(reporting_mta=HOST)
UNTIL = ARRIVED + 5 * 86400


def stored(index: int, address: str, notify: str | None = None) -> StoredRecipient:
    return StoredRecipient(
        message_id="01HF3K7Q2M4XK9A",
        index=index,
        address=address,
        orcpt=None,
        notify=notify,
        state=RecipientState.QUEUED,
        attempts=1,
        next_attempt=0.0,
        last_attempt=None,
        last_status=None,
        last_reply=None,
        remote_mta=None,
        lease_owner="test",
        lease_until=NOW + 900,
    )


def recipient_blocks(report: NewMessage) -> list[dict[str, str]]:
    return [b for b in status_blocks(report) if "Action" in b]


def returned_type(report: NewMessage) -> str:
    """The content type of the report's third part, the returned original."""
    parts = parse(report).get_payload()
    assert isinstance(parts, list)
    returned = parts[2]
    assert isinstance(returned, EmailMessage)
    return returned.get_content_type()


def test_expired_keeps_a_transient_code_and_quotes_who_said_the_last_error() -> None:
    last = DeliveryResult(0, Outcome.DEFERRED, peer_reply(b"452 4.2.2 mailbox full\r\n"), MX)
    result = expired(last)
    assert result.outcome is Outcome.FAILED
    assert (result.reply.code, result.reply.status) == (452, "4.4.7")
    assert result.reply.text == (
        f"Delivery time expired; last error: {MX} said: 452 4.2.2 mailbox full"
    )
    assert result.remote_mta == MX
    ours = DeliveryResult(1, Outcome.DEFERRED, Reply.of(550, "5.1.1", "odd"), "")
    assert expired(ours).reply.code == 451  # a non-transient last reply: a plain 451


@pytest.mark.parametrize(
    ("state", "final_here", "action"),
    [
        (RecipientState.FAILED, False, Action.FAILED),
        (RecipientState.QUEUED, False, Action.DELAYED),
        (RecipientState.RELAYED, False, Action.RELAYED),
        (RecipientState.DELIVERED, True, Action.DELIVERED),
        (RecipientState.DELIVERED, False, None),  # the SMTP next hop reports itself
    ],
)
def test_report_action_follows_the_recorded_state(
    state: RecipientState, final_here: bool, action: Action | None
) -> None:
    assert report_action(state, final_here=final_here) is action


def test_dsn_reason_is_sendmails_text() -> None:
    failed = RecipientReport.from_delivery(
        DeliveryRecipient(0, "bob@example.org", None, None),
        DeliveryResult(0, Outcome.FAILED, Reply.of(550, "5.1.1", "User unknown")),
        attempted_at=NOW,
    )
    assert dsn_reason(ReportKind.FAILURE, [failed]) == "550 5.1.1 User unknown"
    bare = RecipientReport("bob@example.org", Action.DELAYED, "4.4.1")
    assert dsn_reason(ReportKind.DELAY, [bare]) == (
        "Warning: could not send message yet, will keep trying: 4.4.1"
    )
    assert dsn_reason(ReportKind.SUCCESS, [bare]) == "Return receipt"


def test_one_report_per_kind_in_the_order_first_seen() -> None:
    reports = MessageReports()
    later = Reply.of(451, "4.3.0", "try later")
    unknown = Reply.of(550, "5.1.1", "User unknown")
    ok = Reply.of(250, "2.0.0", "Delivered")
    reports.add(
        stored(0, "carol@example.net"),
        DeliveryResult(0, Outcome.DEFERRED, later),
        RecipientState.QUEUED,
        final_here=False,
        now=NOW,
    )
    for index, address in ((1, "bob@example.org"), (2, "dave@example.org")):
        result = DeliveryResult(index, Outcome.FAILED, unknown)
        reports.add(
            stored(index, address), result, RecipientState.FAILED, final_here=False, now=NOW
        )
    for index, here in ((3, True), (4, False)):
        result = DeliveryResult(index, Outcome.DELIVERED, ok)
        rcpt = stored(index, f"u{index}@example.org", notify="SUCCESS")
        reports.add(rcpt, result, RecipientState.DELIVERED, final_here=here, now=NOW)
    assert reports.delayed
    assert list(reports.found) == [ReportKind.DELAY, ReportKind.FAILURE, ReportKind.SUCCESS]
    notices = reports.notices(REPORTER, make_original(), NOW, warn_until=UNTIL)
    assert [n.kind for n in notices] == list(reports.found)
    delay, failure, success = notices
    assert (
        delay.reason == "Warning: could not send message yet, will keep trying: 451 4.3.0 try later"
    )
    assert failure.reason == "550 5.1.1 User unknown"
    assert success.reason == "Return receipt"
    assert failure.to == "alice@example.com"  # to the sender
    assert [b["Final-Recipient"] for b in recipient_blocks(failure.message)] == [
        "rfc822; bob@example.org",
        "rfc822; dave@example.org",
    ]
    assert [b["Final-Recipient"] for b in recipient_blocks(success.message)] == [
        "rfc822; u3@example.org"  # u4 went on to an SMTP hop: it reports itself
    ]
    assert "Will-Retry-Until" in recipient_blocks(delay.message)[0]
    assert "Will-Retry-Until" not in recipient_blocks(failure.message)[0]


def test_no_delay_warning_unless_due_and_no_report_unless_asked() -> None:
    reports = MessageReports()
    later = DeliveryResult(0, Outcome.DEFERRED, Reply.of(451, "4.3.0", "try later"))
    reports.add(
        stored(0, "bob@example.org"), later, RecipientState.QUEUED, final_here=False, now=NOW
    )
    assert reports.notices(REPORTER, make_original(), NOW, warn_until=None) == []
    never = MessageReports()
    never.add(
        stored(0, "bob@example.org", notify="NEVER"),
        DeliveryResult(0, Outcome.FAILED, Reply.of(550, "5.1.1", "User unknown")),
        RecipientState.FAILED,
        final_here=False,
        now=NOW,
    )
    assert never.notices(REPORTER, make_original(), NOW, warn_until=UNTIL) == []
    assert not never.delayed


def test_a_failed_bounce_goes_to_the_postmaster_and_a_failed_double_bounce_nowhere() -> None:
    reports = MessageReports()
    failed = DeliveryResult(0, Outcome.FAILED, Reply.of(550, "5.1.1", "User unknown"))
    reports.add(
        stored(0, "bob@example.org"), failed, RecipientState.FAILED, final_here=False, now=NOW
    )
    bounce = make_original(sender=None, origin=Origin(protocol="bounce"))
    (notice,) = reports.notices(REPORTER, bounce, NOW, warn_until=None)
    assert notice.to == f"postmaster@{HOST}"
    assert notice.message.origin.protocol == "double-bounce"
    other = Reporter(HOST, double_bounce_recipient="mailer-errors@example.com")
    (elsewhere,) = reports.notices(other, bounce, NOW, warn_until=None)
    assert elsewhere.to == "mailer-errors@example.com"
    double = make_original(sender=None, origin=Origin(protocol="double-bounce"))
    assert reports.notices(REPORTER, double, NOW, warn_until=None) == []


def test_max_return_size_returns_only_the_headers_of_larger_originals() -> None:
    reports = MessageReports()
    failed = DeliveryResult(0, Outcome.FAILED, Reply.of(550, "5.1.1", "User unknown"))
    reports.add(
        stored(0, "bob@example.org"), failed, RecipientState.FAILED, final_here=False, now=NOW
    )
    whole = reports.notices(REPORTER, make_original(), NOW, warn_until=None)[0]
    small = Reporter(HOST, max_return_size=10)
    headers = reports.notices(small, make_original(), NOW, warn_until=None)[0]
    assert returned_type(whole.message) == "message/rfc822"
    assert returned_type(headers.message) == "text/rfc822-headers"


def test_expanded_is_a_success_report_with_the_expanded_action() -> None:
    alias = stored(0, "team@example.com", notify="SUCCESS,FAILURE")
    notice = REPORTER.expanded(make_original(), alias, NOW)
    assert notice is not None
    assert notice.kind is ReportKind.SUCCESS
    assert notice.reason == "Return receipt"
    (block,) = recipient_blocks(notice.message)
    assert (block["Action"], block["Status"]) == ("expanded", "2.0.0")
    assert "team@example.com" in text_part(notice.message)
    quiet = stored(0, "team@example.com")  # no NOTIFY: no success report
    assert REPORTER.expanded(make_original(), quiet, NOW) is None
