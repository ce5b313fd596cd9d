"""DMARC failure reports (RFC 7489 7.3, RFC 6591): when ``fo=`` asks for one, and the
report read back with the stdlib's email parser."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from email.message import EmailMessage

import pytest

from mailwright.core.dmarc import Discovery, Evaluation, Identifier, Result, parse_record
from mailwright.core.dmarc_failure import FailureReport, auth_failure, failure_options
from mailwright.core.headers import Header, HeaderList

RUF = "v=DMARC1; p=reject; ruf=mailto:f@example.com"
SPF_FAIL = Identifier("other.test", "fail", scope="mfrom")
SPF_PASS = Identifier("example.com", "pass", scope="mfrom")
DKIM_BAD = Identifier("example.com", "fail", selector="s1")
DKIM_GOOD = Identifier("example.com", "pass", selector="s1")


def outcome(record: str, result: Result, *, spf: bool = False, dkim: bool = False) -> Evaluation:
    found = Discovery(None, "example.com", parse_record(record))
    return Evaluation(result, "example.com", found, spf_aligned=spf, dkim_aligned=dkim)


@pytest.mark.parametrize(
    ("fo", "expected"),
    [("", {"0"}), ("0", {"0"}), ("1:d", {"1", "d"}), ("D : S", {"d", "s"}), ("x", {"0"})],
)
def test_options(fo: str, expected: set[str]) -> None:
    assert failure_options(fo) == expected


def test_fo_0_reports_a_dmarc_failure_only() -> None:
    assert auth_failure(outcome(RUF, Result.FAIL), SPF_FAIL, [DKIM_BAD]) == "dmarc"
    assert auth_failure(outcome(RUF, Result.PASS, spf=True), SPF_PASS, [DKIM_BAD]) is None


def test_fo_1_reports_any_mechanism_without_an_aligned_pass() -> None:
    record = RUF + "; fo=1"
    half = outcome(record, Result.PASS, spf=True)  # SPF aligned, no DKIM
    assert auth_failure(half, SPF_PASS, []) == "dmarc"
    both = outcome(record, Result.PASS, spf=True, dkim=True)
    assert auth_failure(both, SPF_PASS, [DKIM_GOOD]) is None


def test_fo_d_and_s_report_failed_mechanisms_aligned_or_not() -> None:
    passing = outcome(RUF + "; fo=d:s", Result.PASS, dkim=True)
    assert auth_failure(passing, SPF_PASS, [DKIM_GOOD, DKIM_BAD]) == "signature"
    assert auth_failure(passing, SPF_FAIL, [DKIM_GOOD]) == "spf"
    assert auth_failure(passing, SPF_PASS, [DKIM_GOOD]) is None
    only_d = outcome(RUF + "; fo=d", Result.PASS, dkim=True)
    assert auth_failure(only_d, SPF_FAIL, [DKIM_GOOD]) is None


def test_no_report_without_ruf_or_for_an_unsure_outcome() -> None:
    assert auth_failure(outcome("v=DMARC1; p=reject", Result.FAIL), SPF_FAIL, []) is None
    assert auth_failure(outcome(RUF, Result.TEMPERROR), SPF_FAIL, []) is None
    nothing = Evaluation(Result.NONE, "example.com", Discovery(Result.NONE, "example.com"))
    assert auth_failure(nothing, SPF_FAIL, []) is None


def original() -> HeaderList:
    return HeaderList(
        [
            Header.make("From", "Mallory <ceo@example.com>"),
            Header.make("To", "victim@mx.test"),
            Header.make("Subject", "urgent wire transfer"),
        ]
    )


def report(failure: str = "dmarc", headers: HeaderList | None = None) -> FailureReport:
    return FailureReport(
        evaluation=outcome(RUF, Result.FAIL),
        auth_failure=failure,
        queue_id="01ABCDEF",
        source_ip="192.0.2.7",
        envelope_from="x@other.test",
        arrival=1_700_000_000.0,
        headers=headers or original(),
        auth_results="mx.test; spf=fail smtp.mailfrom=x@other.test; dkim=fail header.d=example.com"
        "; dmarc=fail (p=REJECT dis=REJECT) header.from=example.com",
        delivery_result="reject",
        dkim=(DKIM_BAD,),
    )


def parsed(r: FailureReport) -> EmailMessage:
    fields, body = r.mail("mx.test", "postmaster@mx.test", "f@example.com", 1_700_000_100.0)
    head = "".join(f"{name}: {value}\r\n" for name, value in fields).encode()
    message = email.message_from_bytes(head + b"\r\n" + body, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_the_report_is_a_feedback_report_with_the_headers_only() -> None:
    message = parsed(report())
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "feedback-report"
    assert message["Subject"] == "DMARC failure report for example.com from 192.0.2.7"
    assert message["To"] == "f@example.com" and message["Auto-Submitted"] == "auto-generated"
    text, feedback, returned = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert feedback.get_content_type() == "message/feedback-report"
    fields = feedback.get_payload()[0]  # the stdlib reads the fields as one header block
    assert fields["Feedback-Type"] == "auth-failure"
    assert fields["Version"] == "1"
    assert fields["Auth-Failure"] == "dmarc"
    assert fields["Source-IP"] == "192.0.2.7"
    assert fields["Reported-Domain"] == "example.com"
    assert fields["Original-Mail-From"] == "<x@other.test>"
    assert fields["Identity-Alignment"] == "none"
    assert fields["Delivery-Result"] == "reject"
    assert "dmarc=fail (p=REJECT dis=REJECT)" in str(fields["Authentication-Results"])
    assert fields["DKIM-Domain"] is None  # only for a signature failure
    assert fields["Original-Envelope-Id"] is None  # the client gave no ENVID
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: urgent wire transfer" in returned.get_content()


def test_a_signature_failure_names_the_signature() -> None:
    fields = parsed(report("signature")).get_payload()[1].get_payload()[0]
    assert fields["Auth-Failure"] == "signature"
    assert (fields["DKIM-Domain"], fields["DKIM-Selector"]) == ("example.com", "s1")


def test_utf8_headers_go_as_global_headers() -> None:
    headers = original()
    headers.append(Header.make("Subject", "überweisung"))
    _, body = report(headers=headers).mail("mx.test", "p@mx.test", "f@example.com", 0.0)
    assert not body.isascii()
    assert b"Content-Type: message/global-headers\r\n" in body
    assert "überweisung".encode() in body


def test_the_envid_is_the_original_envelope_id_on_one_line() -> None:
    with_envid = dataclasses.replace(report(), envelope_id="QQ314159\r\nX-Injected: yes")
    fields = parsed(with_envid).get_payload()[1].get_payload()[0]
    assert fields["Original-Envelope-Id"] == "QQ314159  X-Injected: yes"
    assert fields["X-Injected"] is None
