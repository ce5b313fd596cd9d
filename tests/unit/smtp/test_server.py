"""The server protocol core, driven directly (no sockets)."""

from __future__ import annotations

import pytest

from mailwright.core.reply import Reply
from mailwright.smtp import events as ev
from mailwright.smtp.data import BareLinePolicy, DataLimits
from mailwright.smtp.server import ServerSettings, State

from .driver import Driver, codes

EHLO = b"EHLO client.test\r\n"
TXN = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"


def session(**kw: object) -> Driver:
    d = Driver(ServerSettings(hostname="mx.test", **kw))  # type: ignore[arg-type]
    d.feed(EHLO)
    return d


def test_greeting_and_ehlo_keywords() -> None:
    d = Driver(ServerSettings(hostname="mx.test", data_limits=DataLimits(max_size=1000)))
    assert d.greeting == b"220 mx.test ESMTP Mailwright\r\n"
    out = d.feed(EHLO).decode()
    lines = out.split("\r\n")
    assert lines[0] == "250-mx.test Hello client.test"
    for kw in [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
    ]:
        assert f"250-{kw}" in lines or f"250 {kw}" in lines
    assert "VRFY" not in out


def test_full_transaction_with_dot_unstuffing() -> None:
    d = session()
    out = d.replies(TXN + b"DATA\r\n")
    assert codes(out) == [250, 250, 354]
    out = d.replies(b"Subject: x\r\n\r\n..leading\r\n.\r\nQUIT\r\n")
    assert codes(out) == [250, 221]
    assert d.messages == [b"Subject: x\r\n\r\n.leading\r\n"]
    assert d.conn.state is State.CLOSED


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (b"MAIL FROM:<a@x.test>\r\n", [503]),  # before EHLO
    ],
)
def test_mail_before_hello(commands: bytes, expected: list[int]) -> None:
    d = Driver()
    assert codes(d.replies(commands)) == expected


def test_sequence_errors() -> None:
    d = session()
    assert codes(d.replies(b"RCPT TO:<b@y.test>\r\n")) == [503]
    assert codes(d.replies(b"DATA\r\n")) == [503]
    assert codes(d.replies(b"MAIL FROM:<a@x.test>\r\n")) == [250]
    assert codes(d.replies(b"MAIL FROM:<a@x.test>\r\n")) == [503]  # nested
    assert codes(d.replies(b"DATA\r\n")) == [503]  # no RCPT yet
    assert codes(d.replies(b"RCPT TO:<bad address>\r\n")) == [553]
    assert codes(d.replies(b"DATA\r\n")) == [554]  # RCPTs tried, none accepted
    assert codes(d.replies(b"RSET\r\n")) == [250]
    assert codes(d.replies(b"RCPT TO:<b@y.test>\r\n")) == [503]  # RSET ended the txn


def test_every_reply_has_an_enhanced_code() -> None:
    d = session()
    lines = d.replies(
        b"RCPT TO:<b@y.test>\r\nMAIL FROM:<a@x.test> FOO=1\r\nMAIL FROM:<a@x.test>\r\n"
        b"RCPT TO:<b@y.test> NOTIFY=BOGUS\r\nRCPT TO:<b@y.test>\r\nVRFY x\r\nEXPN x\r\n"
        b"NOOP\r\nHELP\r\nXYZZY\r\nDATA\r\n"
    )
    for line in lines:
        if not line.startswith("354"):
            assert line[4:5].isdigit() and line[5] == ".", line


def test_null_sender_and_postmaster() -> None:
    d = session()
    assert codes(d.replies(b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n")) == [250, 250]
    rcpt = next(e for e in d.events if isinstance(e, ev.RcptTo))
    assert rcpt.recipient.address.is_postmaster


def test_dsn_parameters_parsed_and_validated() -> None:
    d = session()
    out = d.replies(
        b"MAIL FROM:<a@x.test> RET=HDRS ENVID=QQ+2Bid\r\n"
        b"RCPT TO:<b@y.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40y.test\r\n"
    )
    assert codes(out) == [250, 250]
    mail = next(e for e in d.events if isinstance(e, ev.MailFrom))
    assert mail.params.ret == "HDRS" and mail.params.envid == "QQ+id"
    rcpt = next(e for e in d.events if isinstance(e, ev.RcptTo))
    assert rcpt.recipient.orcpt == "rfc822;b+40y.test"
    assert rcpt.recipient.original == "rfc822;b@y.test"
    assert {n.value for n in rcpt.recipient.notify or ()} == {"SUCCESS", "DELAY"}


@pytest.mark.parametrize(
    "param",
    [
        b"NOTIFY=NEVER,SUCCESS",
        b"NOTIFY=",
        b"NOTIFY=SOMETIMES",
        b"ORCPT=rfc822",
        b"ORCPT=rfc822;bad+zz",
        b"ORCPT=;x",
        b"NOTIFY=SUCCESS NOTIFY=FAILURE",
    ],
)
def test_malformed_rcpt_dsn_parameter_gets_501_554(param: bytes) -> None:
    d = session()
    d.feed(b"MAIL FROM:<a@x.test>\r\n")
    assert d.replies(b"RCPT TO:<b@y.test> " + param + b"\r\n")[0].startswith("501 5.5.4")


@pytest.mark.parametrize(
    "param", [b"RET=ALL", b"RET=", b"ENVID=a+b", b"ENVID=a=b", b"RET=FULL RET=HDRS"]
)
def test_malformed_mail_dsn_parameter(param: bytes) -> None:
    d = session()
    assert d.replies(b"MAIL FROM:<a@x.test> " + param + b"\r\n")[0].startswith("501 5.5.4")


def test_unknown_parameter_is_555() -> None:
    d = session()
    assert d.replies(b"MAIL FROM:<a@x.test> XFOO=1\r\n")[0].startswith("555 5.5.4")


def test_esmtp_parameters_refused_after_helo() -> None:
    d = Driver()
    d.feed(b"HELO client.test\r\n")
    assert codes(d.replies(b"MAIL FROM:<a@x.test> SIZE=10\r\n")) == [555]


def test_declared_size_over_limit() -> None:
    d = session(data_limits=DataLimits(max_size=1000))
    assert d.replies(b"MAIL FROM:<a@x.test> SIZE=1001\r\n") == [
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ]
    assert codes(d.replies(b"MAIL FROM:<a@x.test> SIZE=1000\r\n")) == [250]


def test_size_enforced_while_streaming_answered_once_at_end() -> None:
    d = session(data_limits=DataLimits(max_size=100))
    d.feed(TXN + b"DATA\r\n")
    body = b"".join(b"line %d of the message\r\n" % i for i in range(50))
    out = d.replies(body)
    assert out == []  # nothing said until the end of data
    out = d.replies(b".\r\n")
    assert out == ["552 5.3.4 Message size exceeds fixed maximum message size"]
    assert d.messages == []
    assert codes(d.replies(b"NOOP\r\n")) == [250]  # still in step


@pytest.mark.parametrize(
    "payload",
    [
        b"a\n.\nMAIL FROM:<evil@x>\r\n",
        b"a\n.\r\nRCPT TO:<evil@x>\r\n",
        b"a\r.\rMAIL FROM:<evil@x>\r\n",
        b"a\r\n.\nb\r\n",
        b"a\r\n.\rb\r\n",
        b"bare\nlf\r\n",
        b"bare\rcr\r\n",
    ],
)
def test_smuggling_sequences_never_end_data_and_are_refused(payload: bytes) -> None:
    d = session()
    d.feed(TXN + b"DATA\r\n")
    assert d.replies(payload) == []  # not the end of data
    assert [e for e in d.events if isinstance(e, ev.MailFrom)][1:] == []
    out = d.replies(b".\r\n")
    assert len(out) == 1 and out[0].startswith("550 5.6.0")
    assert d.messages == []


def test_bare_lf_normalised_when_configured() -> None:
    d = session(data_limits=DataLimits(bare_lines=BareLinePolicy.NORMALIZE))
    d.feed(TXN + b"DATA\r\n")
    out = d.replies(b"a\nb\r\n.\r\n")
    assert codes(out) == [250]
    assert d.messages == [b"a\r\nb\r\n"]


def test_long_text_line_refused_after_data_when_limited() -> None:
    d = session(data_limits=DataLimits(max_line=1000))
    d.feed(TXN + b"DATA\r\n")
    assert d.replies(b"x" * 998 + b"\r\n") == []  # exactly 1000 octets is fine
    assert d.replies(b"y" * 999 + b"\r\n") == []
    out = d.replies(b".\r\n")
    assert out[0].startswith("550 5.6.0") and "1000" in out[0]


def test_long_lines_accepted_by_default() -> None:
    d = session()
    d.feed(TXN + b"DATA\r\n")
    line = b"z" * 200_000 + b"\r\n"
    assert codes(d.replies(b"Subject: x\r\n\r\n" + line + b".\r\n")) == [250]
    assert d.messages == [b"Subject: x\r\n\r\n" + line]


def test_exact_limit_line_accepted() -> None:
    d = session(data_limits=DataLimits(max_line=1000))
    d.feed(TXN + b"DATA\r\n")
    assert codes(d.replies(b"x" * 998 + b"\r\n.\r\n")) == [250]


@pytest.mark.parametrize("max_line", [0, 1000])
def test_huge_line_without_crlf_keeps_memory_bounded(max_line: int) -> None:
    d = session(data_limits=DataLimits(max_line=max_line))
    d.feed(TXN + b"DATA\r\n")
    for _ in range(100):
        d.feed(b"z" * 65536)
        assert len(d.conn._in) < 70000
        reader = d.conn._reader
        assert reader is not None and len(getattr(reader, "_carry", b"")) < 140000
        d.content.clear()  # the driver spools it; only the core's memory is measured
    expected = 550 if max_line else 250
    assert codes(d.replies(b"\r\n.\r\n")) == [expected]


def test_long_command_line_500_and_session_continues() -> None:
    d = session()
    out = d.replies(b"NOOP " + b"x" * 3000 + b"\r\nNOOP\r\n")
    assert out[0].startswith("500 5.5.2") and codes(out) == [500, 250]
    out = d.replies(b"NOOP " + b"x" * 100000)
    assert codes(out) == [500]
    assert codes(d.replies(b"more\r\nNOOP\r\n")) == [250]


def test_bare_lf_command_refused() -> None:
    d = session()
    assert d.replies(b"NOOP\n")[0].startswith("500 5.5.2")


def test_pipelining_replies_in_order() -> None:
    d = session()
    out = d.replies(
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<bad>\r\n"
        b"RCPT TO:<c@y.test>\r\nDATA\r\n"
    )
    assert codes(out) == [250, 250, 553, 250, 354]


def test_data_pipelined_with_content_is_refused() -> None:
    d = session()
    out = d.replies(TXN + b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
    assert codes(out) == [250, 250, 554]
    assert d.conn.state is State.CLOSED
    assert d.messages == []


def test_ehlo_pipelined_with_more_is_refused() -> None:
    d = Driver()
    assert codes(d.replies(EHLO + b"MAIL FROM:<a@x.test>\r\n")) == [554]


def test_talking_before_greeting_is_refused() -> None:
    from mailwright.smtp.server import ServerConnection

    conn = ServerConnection(ServerSettings(hostname="mx.test"))
    conn.receive(b"EHLO early\r\n")
    conn.greet()
    assert conn.data_to_send().startswith(b"554 5.5.0")
    assert isinstance(conn.next_event(), ev.Closed)


def test_rset_and_ehlo_reset_transaction() -> None:
    d = session()
    d.feed(TXN)
    assert d.conn.in_transaction
    d.feed(EHLO)
    assert not d.conn.in_transaction
    assert codes(d.replies(b"RCPT TO:<b@y.test>\r\n")) == [503]


def test_recipient_limit_452() -> None:
    d = session(max_recipients=2)
    out = d.replies(
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<1@y.test>\r\nRCPT TO:<2@y.test>\r\n"
        b"RCPT TO:<3@y.test>\r\n"
    )
    assert out[-1] == "452 4.5.3 Too many recipients"


def test_vrfy_off_by_default_and_252_when_on() -> None:
    assert session().replies(b"VRFY root\r\n")[0].startswith("502 5.5.1")
    assert session(vrfy=True).replies(b"VRFY root\r\n")[0].startswith("252 2.5.2")


def test_bdat_chunks_and_last() -> None:
    d = session()
    out = d.replies(TXN + b"BDAT 7\r\nabc\r\ndeBDAT 2 LAST\r\nf\n")
    # a bare LF in BDAT content is refused too (at the end of the message)
    assert codes(out) == [250, 250, 250, 550]
    d.feed(TXN)
    out = d.replies(b"BDAT 5\r\nhelloBDAT 0 LAST\r\n")
    assert codes(out) == [250, 250]
    assert d.messages == [b"hello"]


def test_bdat_without_transaction_consumes_chunk() -> None:
    d = session()
    out = d.replies(b"BDAT 10 LAST\r\nNOOP\r\nNOOPNOOP\r\n")
    assert codes(out) == [503, 250]


def test_data_after_bdat_refused() -> None:
    d = session()
    out = d.replies(TXN + b"BDAT 3\r\nabcDATA\r\n")
    assert codes(out) == [250, 250, 250, 503]


def test_bdat_refused_by_policy_consumes_and_fails_rest() -> None:
    def decide(e: ev.Event) -> Reply | None:
        if isinstance(e, ev.DataStart):
            return Reply.of(554, "5.7.1", "no")
        return None

    d = Driver(decide=decide)
    d.feed(EHLO)
    out = d.replies(TXN + b"BDAT 3\r\nabcBDAT 3 LAST\r\nxyzNOOP\r\n")
    assert codes(out) == [250, 250, 554, 503, 250]


def test_lmtp_one_reply_per_recipient() -> None:
    def decide(e: ev.Event) -> Reply | list[Reply] | None:
        if isinstance(e, ev.ContentEnd):
            return [Reply.of(250, "2.0.0", "ok"), Reply.of(452, "4.2.2", "full")]
        return None

    d = Driver(ServerSettings(hostname="mx.test", lmtp=True), decide=decide)  # type: ignore[arg-type]
    assert codes(d.replies(EHLO)) == [500]
    d.feed(b"LHLO client.test\r\n")
    out = d.replies(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n")
    assert codes(out) == [250, 250, 250, 354]
    assert d.replies(b"hi\r\n.\r\n") == ["250 2.0.0 ok", "452 4.2.2 full"]


def test_too_many_errors_closes_with_421() -> None:
    d = session(max_bad_commands=3)
    out = d.replies(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
    assert codes(out) == [500, 500, 500, 421]
    assert d.conn.state is State.CLOSED


def test_junk_command_flood_closes() -> None:
    d = session(max_junk_commands=5)
    out = d.replies(b"NOOP\r\n" * 6)
    assert codes(out) == [250] * 5 + [421]


def test_smtputf8_addresses_need_the_parameter() -> None:
    d = session()
    assert codes(d.replies("MAIL FROM:<ü@x.test>\r\n".encode())) == [553]
    out = d.replies("MAIL FROM:<ü@x.test> SMTPUTF8\r\nRCPT TO:<ö@bücher.test>\r\n".encode())
    assert codes(out) == [250, 250]


def test_invalid_utf8_command() -> None:
    d = session()
    assert d.replies(b"NOOP \xff\xfe\r\n")[0].startswith("500 5.5.2")


def test_source_route_is_ignored() -> None:
    d = session()
    d.feed(b"MAIL FROM:<a@x.test>\r\n")
    assert codes(d.replies(b"RCPT TO:<@hop1.test,@hop2.test:user@final.test>\r\n")) == [250]
    rcpt = next(e for e in d.events if isinstance(e, ev.RcptTo))
    assert str(rcpt.recipient.address) == "user@final.test"
