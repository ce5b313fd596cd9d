"""The local SMTP client against the real server core, and the exit-code table."""

from __future__ import annotations

import socket
import threading

import pytest

from mailwright.cli.submit import judge
from mailwright.config.lite import SubmitConfig
from mailwright.core.reply import Reply as ServerReply
from mailwright.core.submission import Rcpt, SubmissionEnvelope
from mailwright.edge.localsmtp import ConnectionLostError, LocalSmtpClient, Result
from mailwright.smtp import events as ev
from mailwright.smtp.data import DataLimits
from mailwright.smtp.server import ServerConnection, ServerSettings, State


class CoreServer:
    """The real sans-I/O server core on one end of a socket pair, refusing what it is told."""

    def __init__(self, sock: socket.socket, refuse: dict[str, ServerReply]) -> None:
        self.sock = sock
        self.refuse = refuse
        self.received = b""
        self.conn = ServerConnection(
            ServerSettings(hostname="core.test", data_limits=DataLimits(max_size=100_000))
        )
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        conn = self.conn
        conn.greet()
        while True:
            self.sock.sendall(conn.data_to_send())
            event = conn.next_event()
            if event is None:
                self.sock.sendall(conn.data_to_send())
                if conn.state is State.CLOSED:
                    return
                data = self.sock.recv(65536)
                if not data:
                    return
                conn.receive(data)
            elif isinstance(event, ev.RcptTo):
                conn.respond(self.refuse.get(str(event.recipient.address)))
            elif isinstance(event, ev.MailFrom):
                conn.respond(self.refuse.get("mail"))
            elif isinstance(event, ev.Content):
                self.received += event.data
            elif isinstance(event, ev.ContentEnd):
                conn.respond(
                    event.problem
                    or self.refuse.get("eom")
                    or ServerReply.of(250, "2.0.0", "QID123 Message accepted for delivery")
                )
            elif isinstance(event, ev.Closed):
                self.sock.sendall(conn.data_to_send())
                return
            elif isinstance(event, ev.Hello | ev.DataStart):
                conn.respond(None)


def dialogue(
    envelope: SubmissionEnvelope,
    message: bytes,
    refuse: dict[str, ServerReply] | None = None,
    chunks: list[bytes] | None = None,
) -> tuple[Result, CoreServer]:
    ours, theirs = socket.socketpair()
    server = CoreServer(theirs, refuse or {})
    try:
        client = LocalSmtpClient(ours, timeout=10)
        result = client.submit(envelope, chunks or [message], len(message))
    finally:
        ours.close()
    server.thread.join(10)
    theirs.close()
    return result, server


def test_a_message_crosses_the_real_core_unchanged() -> None:
    message = b"Subject: x\r\n\r\n.leading dot\r\n..two\r\nend\r\n"
    env = SubmissionEnvelope(
        "me@x.test",
        [Rcpt("a@y.test", "SUCCESS,FAILURE", "rfc822;a@y.test"), Rcpt("b@y.test")],
        ret="HDRS",
        envid="id 1",
        body_type="8BITMIME",
    )
    result, server = dialogue(env, message)
    assert result.final is not None and result.final.code == 250
    assert result.queue_id == "QID123"
    assert [r.address for r in result.accepted] == ["a@y.test", "b@y.test"]
    assert server.received == message


@pytest.mark.parametrize(
    "chunks",
    [
        [b".a\r\nb\r\n.\r\n..c\r\n"],
        [b".a\r", b"\nb\r\n", b".", b"\r\n..c\r\n"],
        [b".", b"a", b"\r\n", b"b\r\n.\r", b"\n..c", b"\r\n"],
    ],
)
def test_dot_stuffing_is_independent_of_chunking(chunks: list[bytes]) -> None:
    message = b"".join(chunks)
    env = SubmissionEnvelope("me@x.test", [Rcpt("a@y.test")])
    result, server = dialogue(env, message, chunks=chunks)
    assert result.queue_id == "QID123" and server.received == message


def test_long_lines_are_not_folded() -> None:
    message = b"Subject: " + b"x" * 5000 + b"\r\n\r\n" + b"y" * 3000 + b"\r\n"
    result, server = dialogue(SubmissionEnvelope("", [Rcpt("a@y.test")]), message)
    assert result.queue_id == "QID123" and server.received == message


def test_thousands_of_pipelined_recipients_do_not_stall_either_side() -> None:
    """The replies outgrow the socket buffer long before the commands are all written."""
    rcpts = [Rcpt(f"user{i}@y.test") for i in range(20_000)]
    refuse = {"user7@y.test": ServerReply.of(550, "5.1.1", "User unknown")}
    result, _ = dialogue(SubmissionEnvelope("me@x.test", rcpts), b"x\r\n", refuse)
    assert result.queue_id == "QID123" and len(result.accepted) == 1000  # the core's limit
    assert result.refused[0][0].address == "user7@y.test" and len(result.refused) == 19_000
    assert all(reply.code == 452 for _, reply in result.refused[1:])


@pytest.mark.parametrize(
    "envelope",
    [
        SubmissionEnvelope("me@x.test", [Rcpt("a@y.test", notify="SOMETIMES")]),
        SubmissionEnvelope("me@x.test", [Rcpt("a@y.test\r\nRSET")]),
        SubmissionEnvelope("me@x.test", [Rcpt("a@y.test")], ret="ALL"),
        SubmissionEnvelope("me@x.test", []),
    ],
)
def test_an_envelope_smtp_cannot_say_is_refused_before_mail(envelope: SubmissionEnvelope) -> None:
    result, server = dialogue(envelope, b"x\r\n")
    assert result.failure is not None and result.failure[0] == "mail"
    assert result.failure[1].code == 501 and not result.accepted
    assert server.received == b""


def test_refused_recipients_are_reported_and_the_rest_is_sent() -> None:
    env = SubmissionEnvelope("me@x.test", [Rcpt("a@y.test"), Rcpt("b@y.test"), Rcpt("c@y.test")])
    refuse = {
        "a@y.test": ServerReply.of(550, "5.1.1", "<a@y.test>... User unknown"),
        "c@y.test": ServerReply.of(451, "4.3.0", "try later"),
    }
    result, _ = dialogue(env, b"x\r\n", refuse)
    assert [r.address for r in result.accepted] == ["b@y.test"]
    assert [(r.address, reply.code) for r, reply in result.refused] == [
        ("a@y.test", 550),
        ("c@y.test", 451),
    ]
    assert result.final is not None and result.final.positive


def test_no_recipient_accepted_ends_before_data() -> None:
    env = SubmissionEnvelope("me@x.test", [Rcpt("a@y.test")])
    refuse = {"a@y.test": ServerReply.of(550, "5.1.1", "User unknown")}
    result, server = dialogue(env, b"x\r\n", refuse)
    assert result.failure is not None and result.failure[0] == "rcpt"
    assert server.received == b""


def test_sender_refused() -> None:
    env = SubmissionEnvelope("me@x.test", [Rcpt("a@y.test"), Rcpt("b@y.test")])
    result, _ = dialogue(env, b"x\r\n", {"mail": ServerReply.of(553, "5.1.7", "bad sender")})
    assert result.failure is not None and result.failure[0] == "mail"
    assert result.failure[1].code == 553


def test_a_message_too_big_is_refused_at_mail_by_its_size() -> None:
    env = SubmissionEnvelope("me@x.test", [Rcpt("a@y.test")])
    result, server = dialogue(env, b"x" * 200_000 + b"\r\n")
    assert result.failure is not None and result.failure[0] == "mail"
    assert result.failure[1].code == 552 and server.received == b""


def test_message_refused_at_the_end() -> None:
    env = SubmissionEnvelope("me@x.test", [Rcpt("a@y.test")])
    loop = ServerReply.of(554, "5.4.6", "Too many hops")
    result, _ = dialogue(env, b"x\r\n", {"eom": loop})
    assert result.failure is not None and result.failure[0] == "end of data"
    assert result.failure[1].status == "5.4.6"
    assert judge(result, b"x\r\n", env, CONFIG).code == 65


# ---- the exit-code table ----------------------------------------------------------------------
CONFIG = SubmitConfig(
    path=None,
    hostname="mx.test",
    queue_dir="/nonexistent",
    socket_path="/nonexistent/s",
    maildrop_dir="/nonexistent/maildrop",
    domain="mx.test",
)


def refused(*replies: tuple[str, int, str]) -> Result:
    result = Result()
    for address, code, status in replies:
        result.refused.append((Rcpt(address), ServerReply.of(code, status, "text")))
    result.failure = ("rcpt", result.refused[-1][1])
    return result


def test_all_recipients_unknown_is_67() -> None:
    result = refused(("a@x", 550, "5.1.1"), ("b@x", 553, "5.1.3"))
    outcome = judge(result, b"", SubmissionEnvelope("s@x", []), CONFIG)
    assert outcome.code == 67 and len(outcome.errors) == 2 and outcome.via == ""


def test_policy_refusal_is_77_and_other_refusals_69() -> None:
    env = SubmissionEnvelope("s@x", [])
    assert judge(refused(("a@x", 550, "5.7.1")), b"", env, CONFIG).code == 77
    assert judge(refused(("a@x", 550, "5.2.1")), b"", env, CONFIG).code == 69


def test_content_or_sender_refusal_is_65() -> None:
    env = SubmissionEnvelope("s@x", [])
    for stage in ("end of data", "mail"):
        result = Result()
        result.failure = (stage, ServerReply.of(552, "5.3.4", "too big"))
        outcome = judge(result, b"", env, CONFIG)
        assert outcome.code == 65 and outcome.errors


def test_temporary_failure_without_a_maildrop_is_75() -> None:
    result = Result()
    result.failure = ("end of data", ServerReply.of(451, "4.3.0", "later"))
    env = SubmissionEnvelope("s@x.test", [Rcpt("a@x.test")])
    outcome = judge(result, b"x\r\n", env, CONFIG)
    assert outcome.code == 75 and "maildrop" in outcome.errors[0]


# ---- replies as the wire splits them --------------------------------------------------------
def scripted(replies: list[bytes], log: list[str] | None = None) -> Result:
    """A submission of ENV to a peer that sends each piece byte by byte, so replies cross
    many ``recv`` calls: the greeting first, then one piece after each command (after a
    354: after the content)."""
    ours, theirs = socket.socketpair()

    def run() -> None:
        with theirs:
            for i, piece in enumerate(replies):
                end = b"\r\n.\r\n" if replies[i - 1].startswith(b"354") else b"\r\n"
                heard = b""
                while i and not heard.endswith(end):
                    data = theirs.recv(4096)
                    if not data:
                        return
                    heard += data
                for b in range(len(piece)):
                    theirs.sendall(piece[b : b + 1])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    client = LocalSmtpClient(ours, timeout=10, log=None if log is None else log.append)
    try:
        return client.submit(ENV, [b"x\r\n"], 3)
    finally:
        thread.join(10)
        ours.close()


ENV = SubmissionEnvelope("me@x.test", [Rcpt("a@y.test")])


def test_replies_split_byte_by_byte_make_the_transcript() -> None:
    transcript: list[str] = []
    result = scripted(
        [
            b"220 hi\r\n",
            b"250-one.test\r\n250-SIZE 10000\r\n250 2.0.0 ok\r\n",
            b"250 2.1.0 sender ok\r\n",
            b"250 2.1.5 rcpt ok\r\n",
            b"354 go on\r\n",
            b"250-2.0.0 QID7 queued\r\n250 2.0.0 thanks\r\n",
            b"221 2.0.0 bye\r\n",
        ],
        transcript,
    )
    assert result.final is not None and result.queue_id == "QID7"
    assert (result.final.status, result.final.lines) == ("2.0.0", ("QID7 queued", "thanks"))
    assert not result.final.from_peer  # our own daemon: never quoted as a remote MTA in a report
    assert transcript == [
        "220 hi",
        ">>> EHLO localhost",
        "250-one.test",
        "250-SIZE 10000",
        "250 2.0.0 ok",
        ">>> MAIL FROM:<me@x.test> SIZE=3",
        "250 2.1.0 sender ok",
        ">>> RCPT TO:<a@y.test>",
        "250 2.1.5 rcpt ok",
        ">>> DATA",
        "354 go on",
        ">>> .",
        "250-2.0.0 QID7 queued",
        "250 2.0.0 thanks",
        ">>> QUIT",
        "221 2.0.0 bye",
    ]


def test_the_enhanced_status_is_split_off_every_line() -> None:
    result = scripted([b"554-5.7.1 no such\r\n554 5.7.1 service\r\n", b"221 bye\r\n"])
    assert result.failure is not None
    stage, reply = result.failure
    assert (stage, reply.status, reply.lines, str(reply)) == (
        "connect",
        "5.7.1",
        ("no such", "service"),
        "554 5.7.1 no such / service",
    )


def test_a_421_from_the_daemon_is_an_answer() -> None:
    result = scripted([b"220 hi\r\n", b"421 4.3.2 shutting down\r\n"])
    assert result.failure is not None and result.failure[0] == "ehlo"
    assert result.failure[1].code == 421


@pytest.mark.parametrize(
    "garbage", [b"HTTP/1.1 400 Bad\r\n", b"250-a\r\n354 b\r\n", b"999 nine\r\n", b"x" * 5000]
)
def test_garbage_from_the_server_is_a_lost_connection(garbage: bytes) -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(garbage)
    theirs.close()
    with pytest.raises(ConnectionLostError, match="Protocol error"):
        LocalSmtpClient(ours, timeout=10).submit(ENV, [b"x\r\n"], 3)
    ours.close()


def test_a_closed_connection_is_a_lost_connection() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(b"220-first line\r\n")
    theirs.close()
    with pytest.raises(ConnectionLostError, match="Lost connection"):
        LocalSmtpClient(ours, timeout=10).submit(ENV, [b"x\r\n"], 3)
    ours.close()


def test_a_silent_daemon_is_a_lost_connection() -> None:
    ours, theirs = socket.socketpair()
    with pytest.raises(ConnectionLostError, match="timed out"):
        LocalSmtpClient(ours, timeout=0.2).submit(ENV, [b"x\r\n"], 3)
    ours.close()
    theirs.close()
