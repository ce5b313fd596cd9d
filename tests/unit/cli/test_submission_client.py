"""The local SMTP client against the real server core, dot-stuffing, and the exit-code table."""

from __future__ import annotations

import socket
import threading

import pytest

from mailwright.cli.submit import judge
from mailwright.config.lite import SubmitConfig
from mailwright.core.reply import Reply as ServerReply
from mailwright.core.submission import Rcpt, SubmissionEnvelope
from mailwright.edge.localsmtp import ConnectionLostError, DotStuffer, LocalSmtpClient, Result
from mailwright.smtp import events as ev
from mailwright.smtp.data import DataLimits
from mailwright.smtp.server import ServerConnection, ServerSettings, State


def stuff(*chunks: bytes) -> bytes:
    s = DotStuffer()
    return b"".join(s.feed(c) for c in chunks) + s.end()


@pytest.mark.parametrize(
    "chunks",
    [
        (b".a\r\nb\r\n.\r\n..c\r\n",),
        (b".a\r", b"\nb\r\n", b".", b"\r\n..c\r\n"),
        (b".", b"a", b"\r\n", b"b\r\n.\r", b"\n..c", b"\r\n"),
    ],
)
def test_dot_stuffing_is_independent_of_chunking(chunks: tuple[bytes, ...]) -> None:
    assert stuff(*chunks) == b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"


def test_dot_stuffing_edges() -> None:
    assert stuff() == b".\r\n"
    assert stuff(b"no newline") == b"no newline\r\n.\r\n"
    assert stuff(b".") == b"..\r\n.\r\n"


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
    envelope: SubmissionEnvelope, message: bytes, refuse: dict[str, ServerReply] | None = None
) -> tuple[Result, CoreServer]:
    ours, theirs = socket.socketpair()
    server = CoreServer(theirs, refuse or {})
    try:
        result = LocalSmtpClient(ours, timeout=10).submit(envelope, [message], len(message))
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
def scripted(replies: list[bytes]) -> tuple[socket.socket, threading.Thread]:
    """A peer that sends each piece in its own write after reading one command (or the
    greeting first), byte by byte where asked, so replies cross many ``recv`` calls."""
    ours, theirs = socket.socketpair()

    def run() -> None:
        with theirs:
            for i, piece in enumerate(replies):
                if i:
                    theirs.recv(4096)
                for b in range(len(piece)):
                    theirs.sendall(piece[b : b + 1])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return ours, thread


def test_a_multi_line_reply_split_byte_by_byte_is_one_core_reply() -> None:
    ours, thread = scripted([b"220 hi\r\n", b"250-one.test\r\n250-SIZE 10\r\n250 2.0.0 ok\r\n"])
    transcript: list[str] = []
    client = LocalSmtpClient(ours, timeout=10, log=transcript.append)
    assert client.reply() == ServerReply.of(220, None, "hi")
    hello = client.command("EHLO localhost")
    thread.join(10)
    ours.close()
    assert (hello.code, hello.status, hello.lines) == (
        250,
        None,
        ("one.test", "SIZE 10", "2.0.0 ok"),
    )
    assert not hello.from_peer  # our own daemon: never quoted as a remote MTA in a report
    assert transcript == [
        "220 hi",
        ">>> EHLO localhost",
        "250-one.test",
        "250-SIZE 10",
        "250 2.0.0 ok",
    ]


def test_the_enhanced_status_is_split_off_every_line() -> None:
    ours, thread = scripted([b"550-5.1.1 no such\r\n550 5.1.1 user\r\n"])
    reply = LocalSmtpClient(ours, timeout=10).reply()
    thread.join(10)
    ours.close()
    assert (reply.status, reply.lines, str(reply)) == (
        "5.1.1",
        ("no such", "user"),
        "550 5.1.1 no such / user",
    )


@pytest.mark.parametrize(
    "garbage", [b"HTTP/1.1 400 Bad\r\n", b"250-a\r\n354 b\r\n", b"999 nine\r\n", b"x" * 5000]
)
def test_garbage_from_the_server_is_a_lost_connection(garbage: bytes) -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(garbage)
    theirs.close()
    with pytest.raises(ConnectionLostError, match="not an SMTP reply"):
        LocalSmtpClient(ours, timeout=10).reply()
    ours.close()


def test_a_closed_connection_is_a_lost_connection() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(b"220-first line\r\n")
    theirs.close()
    with pytest.raises(ConnectionLostError, match="closed"):
        LocalSmtpClient(ours, timeout=10).reply()
    ours.close()
