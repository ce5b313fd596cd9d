"""The client protocol core: against the real server core, and against scripted replies."""

from __future__ import annotations

import pytest

from mailwright.core.envelope import BodyType, MailParams, Notify, Ret
from mailwright.core.reply import Reply
from mailwright.smtp import events as ev
from mailwright.smtp.client import (
    ClientSettings,
    Closed,
    Phase,
    SendContent,
    SessionFailed,
    SessionReady,
    TlsReady,
    TlsRefused,
    Transaction,
    TransactionDone,
    TransactionRecipient,
)
from mailwright.smtp.server import ServerSettings

from .client_harness import EHLO_FULL, EHLO_PLAIN, Pair, Scripted, reply_codes, txn

MSG = b"Subject: t\r\n\r\n.leading dot\r\n..two\r\nlast line\r\n"


# ---- against the server core ----------------------------------------------------------------
def test_pipelined_data_transaction_in_one_write() -> None:
    p = Pair(ServerSettings(hostname="mx.test", chunking=False))
    assert isinstance(p.events[0], SessionReady)
    assert p.events[0].extensions.pipelining
    result = p.send(txn("b@y.test", "c@y.test"), MSG)
    assert reply_codes(result) == [250, 250]
    assert all(r.phase is Phase.END for r in result.replies)
    assert p.writes[1] == (
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
    )
    assert p.server.messages == [MSG]  # the server unstuffed exactly what was stuffed
    assert b"\r\n..leading dot\r\n...two\r\n" in p.wire


def test_bdat_when_chunking_offered_in_chunks_of_the_configured_size() -> None:
    p = Pair(client=ClientSettings("client.test", bdat_chunk_size=10))
    body = b"Subject: t\r\n\r\n" + b"0123456789\r\n" * 5
    result = p.send(txn("b@y.test"), body[:7], body[7:])
    assert reply_codes(result) == [250]
    assert p.server.messages == [body]
    assert b"DATA" not in p.wire
    assert p.wire.count(b"BDAT 10\r\n") == len(body) // 10
    assert b" LAST\r\n" in p.wire


def test_bdat_message_without_final_line_end_gets_one_like_data() -> None:
    for chunking in (True, False):
        p = Pair(ServerSettings(hostname="mx.test", chunking=chunking))
        p.send(txn("b@y.test"), b"Subject: t\r\n\r\nno end")
        assert p.server.messages == [b"Subject: t\r\n\r\nno end\r\n"]


@pytest.mark.parametrize("chunking", [True, False])
def test_bare_line_ends_are_normalised_before_sending(chunking: bool) -> None:
    p = Pair(ServerSettings(hostname="mx.test", chunking=chunking))  # rejects bare CR/LF
    result = p.send(txn("b@y.test"), b"Subject: t\n\nbare LF\nbare CR\r", b"\nsplit CRLF\rend\n")
    assert reply_codes(result) == [250]
    assert p.server.messages == [b"Subject: t\r\n\r\nbare LF\r\nbare CR\r\nsplit CRLF\r\nend\r\n"]


def test_reused_session_sends_rset_pipelined_before_the_next_mail() -> None:
    p = Pair()
    p.send(txn("b@y.test"), MSG)
    writes = len(p.writes)
    result = p.send(txn("c@y.test"), MSG)
    assert reply_codes(result) == [250]
    assert p.writes[writes].startswith(b"RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\n")
    assert len(p.server.messages) == 2


def test_dsn_and_mime_parameters_when_the_peer_offers_them() -> None:
    p = Pair(ServerSettings(hostname="mx.test", chunking=False))
    params = MailParams(
        size=123, body=BodyType.EIGHT_BIT, smtputf8=True, ret=Ret.HDRS, envid="id+1=x"
    )
    rcpt = TransactionRecipient(
        "b@y.test", frozenset({Notify.DELAY, Notify.SUCCESS}), "rfc822;b+2B@y.test"
    )
    result = p.send(Transaction("ä@x.test", [rcpt], params), MSG)
    assert reply_codes(result) == [250]
    mail, rcpt_line = p.writes[1].split(b"\r\n")[:2]
    assert mail == (
        "MAIL FROM:<ä@x.test> SIZE=123 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+3Dx".encode()
    )
    assert rcpt_line == b"RCPT TO:<b@y.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2B@y.test"
    mail_event = next(e for e in p.server.events if isinstance(e, ev.MailFrom))
    assert mail_event.params.envid == "id+1=x"


def test_parameters_the_peer_did_not_offer_are_left_out() -> None:
    p = Pair(ServerSettings(hostname="mx.test", dsn=False, smtputf8=False, chunking=False))
    params = MailParams(size=5, ret=Ret.FULL, envid="e", smtputf8=True)
    rcpt = TransactionRecipient("b@y.test", frozenset({Notify.NEVER}), "rfc822;b@y.test")
    p.send(Transaction("a@x.test", [rcpt], params), MSG)
    assert p.writes[1].startswith(b"MAIL FROM:<a@x.test> SIZE=5\r\nRCPT TO:<b@y.test>\r\nDATA")


def test_rcpt_rejection_applies_to_that_recipient_only() -> None:
    def decide(event: ev.Event) -> Reply | None:
        if isinstance(event, ev.RcptTo) and event.recipient.address.local == "bad":
            return Reply.of(550, "5.1.1", "No such user")
        if isinstance(event, ev.RcptTo) and event.recipient.address.local == "later":
            return Reply.of(450, "4.2.1", "Try later")
        return None

    for chunking in (True, False):
        p = Pair(ServerSettings(hostname="mx.test", chunking=chunking), decide)
        result = p.send(txn("b@y.test", "bad@y.test", "later@y.test", "c@y.test"), MSG)
        assert reply_codes(result) == [250, 550, 450, 250]
        assert [r.phase for r in result.replies] == [Phase.END, Phase.RCPT, Phase.RCPT, Phase.END]
        assert result.replies[1].reply.status == "5.1.1"
        assert result.replies[1].reply.text == "No such user"


def test_all_recipients_rejected_sends_no_content() -> None:
    def decide(event: ev.Event) -> Reply | None:
        return Reply.of(550, "5.1.1", "no") if isinstance(event, ev.RcptTo) else None

    for chunking in (True, False):
        p = Pair(ServerSettings(hostname="mx.test", chunking=chunking), decide)
        result = p.send(txn("b@y.test", "c@y.test"), MSG)
        assert [r.phase for r in result.replies] == [Phase.RCPT, Phase.RCPT]
        assert b"Subject" not in p.wire
        assert not result.content_ended and not result.session_lost
        assert p.server.messages == []


def test_mail_and_data_rejections_apply_to_all() -> None:
    def refuse(kind: type) -> object:
        return lambda e: Reply.of(554, "5.7.1", "go away") if isinstance(e, kind) else None

    p = Pair(ServerSettings(hostname="mx.test", chunking=False), refuse(ev.MailFrom))  # type: ignore[arg-type]
    result = p.send(txn("b@y.test", "c@y.test"), MSG)
    assert [(r.reply.code, r.phase) for r in result.replies] == [(554, Phase.MAIL)] * 2
    p = Pair(ServerSettings(hostname="mx.test", chunking=False), refuse(ev.DataStart))  # type: ignore[arg-type]
    result = p.send(txn("b@y.test", "c@y.test"), MSG)
    assert [(r.reply.code, r.phase) for r in result.replies] == [(554, Phase.DATA)] * 2
    p = Pair(ServerSettings(hostname="mx.test"), refuse(ev.ContentEnd))  # type: ignore[arg-type]
    result = p.send(txn("b@y.test"), MSG)
    assert [(r.reply.code, r.phase) for r in result.replies] == [(554, Phase.END)]
    assert result.content_ended


def test_lmtp_one_reply_per_accepted_recipient_in_rcpt_order() -> None:
    def decide(event: ev.Event) -> Reply | list[Reply] | None:
        if isinstance(event, ev.RcptTo) and event.recipient.address.local == "gone":
            return Reply.of(550, "5.1.1", "unknown")
        if isinstance(event, ev.ContentEnd):
            return [
                Reply.of(250, "2.0.0", "b saved"),
                Reply.of(452, "4.2.2", "c over quota"),
                Reply.of(552, "5.2.2", "d over quota"),
            ]
        return None

    for chunking in (True, False):
        server = ServerSettings(hostname="mx.test", lmtp=True, chunking=chunking)
        p = Pair(server, decide)  # type: ignore[arg-type]
        assert p.writes[0] == b"LHLO client.test\r\n"
        result = p.send(txn("b@y.test", "gone@y.test", "c@y.test", "d@y.test"), MSG)
        assert [(r.reply.code, r.phase) for r in result.replies] == [
            (250, Phase.END),
            (550, Phase.RCPT),
            (452, Phase.END),
            (552, Phase.END),
        ]
        assert result.replies[2].reply.text == "c over quota"


def test_quit_closes() -> None:
    p = Pair()
    p.client.quit()
    events = p.pump()
    assert isinstance(events[-1], Closed) and events[-1].reply is not None
    assert events[-1].reply.code == 221
    assert p.client.closed


# ---- scripted peers -----------------------------------------------------------------------
def test_replies_split_byte_by_byte() -> None:
    s = Scripted()
    events = []
    for b in b"220 mx.test ESMTP\r\n":
        events += s.feed(bytes([b]))
    assert s.take() == b"EHLO client.test\r\n"
    for b in EHLO_FULL:
        events += s.feed(bytes([b]))
    ready = events[-1]
    assert isinstance(ready, SessionReady)
    ext = ready.extensions
    assert ext.pipelining and ext.size == 1000 and ext.dsn and ext.smtputf8
    assert not ext.chunking and not ext.starttls
    assert ready.reply.lines[0] == "mx.test"


def test_multi_line_reply_with_enhanced_status_on_every_line() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.client.begin(txn("b@y.test"))
    events = s.feed(
        b"250 2.1.0 ok\r\n550-5.1.1 The email account that you tried to reach\r\n"
        b"550-5.1.1 does not exist. Please try\r\n550 5.1.1 double-checking. x\r\n"
        b"554 5.5.1 no valid recipients\r\n"
    )
    done = events[-1]
    assert isinstance(done, TransactionDone)
    reply = done.result.replies[0].reply
    assert reply.code == 550 and reply.status == "5.1.1"
    assert reply.lines == (
        "The email account that you tried to reach",
        "does not exist. Please try",
        "double-checking. x",
    )


def test_status_of_another_class_is_text() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.client.begin(txn("b@y.test"))
    events = s.feed(b"250 2.1.0 ok\r\n550 4.1.1 odd\r\n554 no\r\n")
    reply = events[-1].result.replies[0].reply  # type: ignore[attr-defined]
    assert reply.status is None and reply.text == "4.1.1 odd"


@pytest.mark.parametrize("code", [b"500", b"502", b"554"])
def test_helo_fallback_when_ehlo_is_refused(code: bytes) -> None:
    s = Scripted()
    s.feed(b"220 old.test SMTP\r\n")
    assert s.take() == b"EHLO client.test\r\n"
    assert s.feed(code + b" 5.5.1 what?\r\n") == []
    assert s.take() == b"HELO client.test\r\n"
    events = s.feed(b"250 old.test\r\n")
    assert isinstance(events[0], SessionReady)
    assert not events[0].extensions.esmtp and not events[0].extensions.pipelining
    s.client.begin(
        Transaction(
            "a@x.test",
            [TransactionRecipient("b@y.test", frozenset({Notify.SUCCESS}), "rfc822;b@y.test")],
            MailParams(size=10, body=BodyType.EIGHT_BIT),
        )
    )
    assert s.take() == b"MAIL FROM:<a@x.test>\r\n"  # no parameters without ESMTP


def test_lhlo_refused_is_not_retried_with_helo() -> None:
    s = Scripted(ClientSettings("client.test", lmtp=True))
    s.feed(b"220 lmtp.test LMTP\r\n")
    assert s.take() == b"LHLO client.test\r\n"
    events = s.feed(b"500 5.5.1 no\r\n")
    assert isinstance(events[0], SessionFailed) and events[0].phase is Phase.HELLO
    assert s.client.closed


def test_one_command_at_a_time_without_pipelining() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_PLAIN)
    s.take()
    s.client.begin(txn("b@y.test", "c@y.test"))
    assert s.take() == b"MAIL FROM:<a@x.test>\r\n"
    assert s.client.waiting_for is Phase.MAIL
    s.feed(b"250 ok\r\n")
    assert s.take() == b"RCPT TO:<b@y.test>\r\n"
    s.feed(b"250 ok\r\n")
    assert s.take() == b"RCPT TO:<c@y.test>\r\n"
    s.feed(b"550 no\r\n")
    assert s.take() == b"DATA\r\n"
    assert s.client.waiting_for is Phase.DATA
    assert isinstance(s.feed(b"354 go\r\n")[0], SendContent)
    s.client.send_content(b"x\r\n")
    s.client.end_content()
    assert s.take() == b"x\r\n.\r\n"
    assert s.client.waiting_for is Phase.END
    done = s.feed(b"250 queued\r\n")[0]
    assert isinstance(done, TransactionDone)
    assert reply_codes(done.result) == [250, 550]
    s.client.begin(txn("d@y.test"))
    assert s.take() == b"RSET\r\n"  # then MAIL, after the reply
    s.feed(b"250 ok\r\n")
    assert s.take() == b"MAIL FROM:<a@x.test>\r\n"


def test_354_without_accepted_recipients_sends_an_empty_message() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.take()
    s.client.begin(txn("b@y.test"))
    s.take()
    assert s.feed(b"250 ok\r\n550 no\r\n354 go ahead anyway\r\n") == []
    assert s.take() == b".\r\n"
    done = s.feed(b"554 no valid recipients\r\n")[0]
    assert isinstance(done, TransactionDone)
    assert [(r.reply.code, r.phase) for r in done.result.replies] == [(550, Phase.RCPT)]


def test_421_mid_transaction_defers_everyone_open_and_closes() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.client.begin(txn("b@y.test", "c@y.test", "d@y.test"))
    events = s.feed(b"250 ok\r\n550 5.1.1 no\r\n421 4.3.2 shutting down\r\n")
    done = events[0]
    assert isinstance(done, TransactionDone)
    assert [(r.reply.code, r.phase) for r in done.result.replies] == [
        (550, Phase.RCPT),
        (421, Phase.RCPT),
        (421, Phase.RCPT),
    ]
    assert done.result.session_lost and s.client.closed


def test_greeting_refused() -> None:
    s = Scripted()
    events = s.feed(b"554 5.7.1 not you\r\n")
    assert isinstance(events[0], SessionFailed) and events[0].phase is Phase.GREETING
    assert events[0].reply.code == 554
    assert s.take() == b"QUIT\r\n"
    s = Scripted()
    events = s.feed(b"421 4.3.2 busy\r\n")
    assert isinstance(events[0], SessionFailed) and s.take() == b""


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello there\r\n",
        b"250-first\r\n251 second\r\n",
        b"650 nope\r\n",
        b"2501 x\r\n",
        b"25\r\n",
        b"x" * 5000,
        b"250-" + b"y" * 100 + b"\r\n" * 0 + (b"250-" + b"z" * 1000 + b"\r\n") * 70,
    ],
)
def test_malformed_replies_become_a_temporary_protocol_error(garbage: bytes) -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.client.begin(txn("b@y.test", "c@y.test"))
    events = s.feed(b"250 ok\r\n" + garbage)
    done = events[0]
    assert isinstance(done, TransactionDone)
    assert all(r.reply.code == 451 and r.reply.status == "4.5.0" for r in done.result.replies)
    assert done.result.session_lost and s.client.closed
    assert s.feed(b"250 more\r\n") == []


def test_garbage_before_a_transaction_fails_the_session() -> None:
    s = Scripted()
    events = s.feed(b"SSH-2.0-OpenSSH\r\n")
    assert isinstance(events[0], SessionFailed)
    assert events[0].reply.status == "4.5.0"


def test_unsolicited_reply_is_a_protocol_error() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    events = s.feed(b"250 what\r\n")
    assert isinstance(events[0], SessionFailed)


def test_connection_lost_mid_content_and_before_the_final_reply() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.client.begin(txn("b@y.test", "c@y.test"))
    s.feed(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n")
    s.client.send_content(b"half")
    s.client.receive_eof()
    done = s.client.next_event()
    assert isinstance(done, TransactionDone)
    assert [(r.reply.code, r.reply.status, r.phase) for r in done.result.replies] == [
        (250, None, Phase.RCPT)
    ] * 0 + [(421, "4.4.2", Phase.DATA), (550, None, Phase.RCPT)]
    assert not done.result.content_ended and done.result.session_lost

    s = Scripted(ClientSettings("client.test", peer="mx1.test [127.0.0.1]"))
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.client.begin(txn("b@y.test"))
    s.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
    s.client.end_content()
    s.client.receive_eof()
    done = s.client.next_event()
    assert isinstance(done, TransactionDone)
    reply = done.result.replies[0].reply
    assert reply.status == "4.4.2" and done.result.content_ended
    assert "mx1.test [127.0.0.1]" in reply.text and "end of data" in reply.text


def test_driver_timeout_settles_the_transaction() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.client.begin(txn("b@y.test"))
    assert s.client.waiting_for is Phase.MAIL
    s.client.fail(Reply.of(451, "4.4.2", "timeout"))
    done = s.client.next_event()
    assert isinstance(done, TransactionDone)
    assert done.result.replies[0].phase is Phase.MAIL


def test_starttls_then_ehlo_again() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n250-mx.test\r\n250 STARTTLS\r\n")
    s.take()
    s.client.starttls()
    assert s.take() == b"STARTTLS\r\n"
    assert isinstance(s.feed(b"220 2.0.0 go ahead\r\n")[0], TlsReady)
    s.client.tls_started()
    assert s.take() == b"EHLO client.test\r\n"
    ready = s.feed(b"250-mx.test\r\n250 PIPELINING\r\n")[0]
    assert isinstance(ready, SessionReady) and ready.extensions.pipelining
    assert s.client.tls


def test_starttls_refused_leaves_the_session_usable() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n250-mx.test\r\n250 STARTTLS\r\n")
    s.client.starttls()
    refused = s.feed(b"454 4.7.0 TLS not available\r\n")[0]
    assert isinstance(refused, TlsRefused)
    s.client.begin(txn("b@y.test"))  # still READY


def test_plaintext_pipelined_after_starttls_220_is_refused() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n250-mx.test\r\n250 STARTTLS\r\n")
    s.client.starttls()
    events = s.feed(b"220 go ahead\r\n250 injected\r\n")
    assert isinstance(events[0], SessionFailed)
    assert "STARTTLS" in events[0].reply.text


def test_commands_with_line_breaks_are_refused_before_sending() -> None:
    s = Scripted()
    s.feed(b"220 mx.test\r\n" + EHLO_FULL)
    s.take()
    with pytest.raises(ValueError):
        s.client.begin(txn("b@y.test\r\nRCPT TO:<evil@x.test>"))
    assert s.take() == b""
    s.client.begin(txn("b@y.test"))  # still usable


def test_bdat_refused_mid_stream_stops_the_content() -> None:
    s = Scripted(ClientSettings("client.test", bdat_chunk_size=4))
    s.feed(b"220 mx.test\r\n250-mx.test\r\n250 CHUNKING\r\n")
    s.take()
    s.client.begin(txn("b@y.test"))
    s.feed(b"250 ok\r\n")
    assert isinstance(s.feed(b"250 ok\r\n")[0], SendContent)
    s.take()
    s.client.send_content(b"abcdefgh")
    assert s.take() == b"BDAT 4\r\nabcd"  # without PIPELINING: one chunk in flight
    assert s.client.content_blocked
    s.feed(b"552 5.3.4 too big\r\n")
    assert s.client.content_refused and not s.client.content_blocked
    s.client.send_content(b"ijkl")
    s.client.end_content()
    done = s.client.next_event()
    assert isinstance(done, TransactionDone)
    assert [(r.reply.code, r.phase) for r in done.result.replies] == [(552, Phase.BDAT)]
    assert b"LAST" not in s.take()


def test_bdat_without_pipelining_one_chunk_in_flight_until_last() -> None:
    s = Scripted(ClientSettings("client.test", bdat_chunk_size=4))
    s.feed(b"220 mx.test\r\n250-mx.test\r\n250 CHUNKING\r\n")
    s.client.begin(txn("b@y.test"))
    s.feed(b"250 ok\r\n")
    s.feed(b"250 ok\r\n")
    s.take()
    s.client.send_content(b"abcdefghij")
    assert s.take() == b"BDAT 4\r\nabcd"
    assert s.client.content_blocked  # "efgh" waits: read a reply first
    s.client.end_content()
    assert s.take() == b""
    s.feed(b"250 2.0.0 4 octets\r\n")
    assert s.take() == b"BDAT 4\r\nefgh"
    assert s.client.waiting_for is Phase.BDAT
    s.feed(b"250 2.0.0 4 octets\r\n")
    assert s.take() == b"BDAT 4 LAST\r\nij\r\n"
    done = s.feed(b"250 2.0.0 queued\r\n")[0]
    assert isinstance(done, TransactionDone) and done.result.bdat
    assert reply_codes(done.result) == [250]


def test_bdat_with_pipelining_keeps_a_window_of_chunks_in_flight() -> None:
    s = Scripted(ClientSettings("client.test", bdat_chunk_size=2, bdat_window=3))
    s.feed(b"220 mx.test\r\n250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
    s.client.begin(txn("b@y.test"))
    assert s.feed(b"250 ok\r\n250 ok\r\n") != []
    s.take()
    s.client.send_content(b"aabbccddee")
    assert s.take() == b"BDAT 2\r\naaBDAT 2\r\nbbBDAT 2\r\ncc"
    assert s.client.content_blocked
    s.feed(b"250 ok\r\n")
    assert s.take() == b"BDAT 2\r\ndd"
    s.client.end_content()
    assert s.take() == b""  # three in flight already
    s.feed(b"250 ok\r\n")
    assert s.take() == b"BDAT 2\r\nee"
    s.feed(b"250 ok\r\n")
    assert s.take() == b"BDAT 2 LAST\r\n\r\n"  # the final CRLF that DATA would add too
    assert s.feed(b"250 ok\r\n250 ok\r\n") == []
    assert isinstance(s.feed(b"250 done\r\n")[0], TransactionDone)


def test_empty_message() -> None:
    for ehlo in (EHLO_FULL, b"250-mx.test\r\n250 CHUNKING\r\n"):
        s = Scripted()
        s.feed(b"220 mx.test\r\n" + ehlo)
        s.client.begin(txn("b@y.test"))
        s.take()
        events = s.feed(b"250 ok\r\n250 ok\r\n" + (b"354 go\r\n" if ehlo is EHLO_FULL else b""))
        assert isinstance(events[0], SendContent)
        s.client.end_content()
        out = s.take()
        assert out == b".\r\n" if ehlo is EHLO_FULL else out.endswith(b"\nBDAT 0 LAST\r\n")
