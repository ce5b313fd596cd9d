"""Local submission over the daemon's Unix socket: a blocking driver for ``smtp.client``.

Used by ``sendmail``, by ``mailwright send`` and by the daemon's maildrop pickup (over a
socket pair), so every local message crosses the same SMTP dialogue and the same server
checks. The dialogue itself (EHLO, MAIL and RCPT parameters, pipelining, DATA with
dot-stuffing, QUIT) is the sans-I/O ``smtp.client.ClientConnection``'s, the one delivery
uses; this module only moves its bytes over a blocking socket and turns its
``TransactionResult`` into a ``Result`` per submission stage. Lines are not folded (the
local listener takes lines of any length; delivery folds what a next hop cannot take),
and content goes with DATA, not BDAT. While a long pipelined write is under way, replies
are read as they come, so neither socket buffer can fill up and stall both sides.

Trusts the daemon's replies only as far as their syntax: a malformed reply, a broken
connection or a timeout is a ``ConnectionLostError`` (the caller treats it as a temporary
failure). An envelope that cannot be said in SMTP (a line break in an address, an unknown
NOTIFY, RET or BODY value: a maildrop file may hold anything) is refused at MAIL with a
``501`` of our own, without a word sent. Reads no settings.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Callable, Iterable

from mailwright.core.envelope import BodyType, MailParams, Notify, Ret
from mailwright.core.reply import Reply
from mailwright.core.submission import Rcpt, SubmissionEnvelope
from mailwright.smtp.client import (
    ClientConnection,
    ClientEvent,
    ClientSettings,
    Closed,
    Phase,
    SendContent,
    SessionFailed,
    Transaction,
    TransactionDone,
    TransactionRecipient,
    TransactionResult,
)

DEFAULT_TIMEOUT = 300.0  # RFC 5321 4.5.3.2 asks clients for 5-10 minutes
SETTINGS = ClientSettings("localhost", peer="the daemon", chunking=False, max_line=0)
Transcript = Callable[[str], None]

# the stage a Result names, by the command whose reply decided it
_STAGES = {
    Phase.GREETING: "connect",
    Phase.HELLO: "ehlo",
    Phase.MAIL: "mail",
    Phase.RCPT: "rcpt",
    Phase.DATA: "data",
    Phase.END: "end of data",
}


class ConnectionLostError(Exception):
    """The connection broke, timed out or carried something that is not SMTP."""


class Result:
    """What the server said about one submission."""

    __slots__ = ("accepted", "failure", "final", "refused")

    def __init__(self) -> None:
        self.accepted: list[Rcpt] = []
        self.refused: list[tuple[Rcpt, Reply]] = []  # RCPT answered 4xx or 5xx
        self.failure: tuple[str, Reply] | None = None  # (stage, reply) that ended it
        self.final: Reply | None = None  # the reply to the end of data

    @property
    def queue_id(self) -> str | None:
        """From ``250 2.0.0 <id> Message accepted for delivery``."""
        if self.final is None or self.final.code != 250 or not self.final.lines:
            return None
        words = self.final.lines[0].split()
        return words[0] if words else None


class LocalSmtpClient:
    def __init__(
        self, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT, log: Transcript | None = None
    ) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.log = log
        self.conn = ClientConnection(SETTINGS)
        self._heard = b""  # for the transcript: a reply line not yet complete
        self._in_content = False

    def submit(self, envelope: SubmissionEnvelope, content: Iterable[bytes], size: int) -> Result:
        """One message; ``content`` yields the CRLF message in chunks, ``size`` octets long."""
        result = Result()
        event = self._next()
        if isinstance(event, SessionFailed):
            result.failure = (_STAGES.get(event.phase, "connect"), _ours(event.reply))
            self._quit()
            return result
        try:
            self.conn.begin(transaction(envelope, size))
        except ValueError as exc:
            result.failure = ("mail", Reply.of(501, "5.5.4", f"Invalid envelope: {exc}"))
            self._quit()
            return result
        event = self._next()
        if isinstance(event, SendContent):
            self._send_content(content)
            event = self._next()
        if not isinstance(event, TransactionDone):
            raise ConnectionLostError(f"unexpected {event!r}")
        self._quit()
        return stages(envelope, event.result)

    # ---- moving bytes -------------------------------------------------------------------------
    def _next(self) -> ClientEvent:
        """The client's next event, reading and writing until there is one."""
        while True:
            event = self.conn.next_event()
            self._flush()  # what the replies so far made it say
            if event is not None:
                _check(event)
                return event
            if self.conn.closed:
                raise ConnectionLostError("the session is over")
            self._receive()

    def _receive(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except OSError as exc:  # a timeout too
            self.conn.fail(Reply.of(451, "4.4.2", f"Lost connection with the daemon: {exc}"))
            return
        if not chunk:
            self.conn.receive_eof()
            return
        self._transcribe(chunk)
        self.conn.receive(chunk)

    def _flush(self) -> None:
        """Write what the client has to say, taking in replies whenever they come."""
        data = self.conn.data_to_send()
        if not data:
            return
        self._log_sent(data)
        view = memoryview(data)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLOUT)
        while view:
            ready = poller.poll(self.timeout * 1000)
            mask = ready[0][1] if ready else 0
            try:
                if mask & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self._receive()
                    if self.conn.closed:
                        return  # the daemon hung up: the rest would not be heard
                if not mask:
                    raise TimeoutError("timed out")
                if mask & select.POLLOUT:
                    view = view[self.sock.send(view) :]
            except OSError as exc:
                self.conn.fail(Reply.of(451, "4.4.2", f"Lost connection with the daemon: {exc}"))
                return

    def _send_content(self, content: Iterable[bytes]) -> None:
        self._in_content = True
        for chunk in content:
            self.conn.send_content(chunk)
            self._flush()
        self.conn.end_content()
        if self.log:
            self.log(">>> .")
        self._flush()
        self._in_content = False

    def _quit(self) -> None:
        self.conn.quit()
        with contextlib.suppress(ConnectionLostError):  # the message's fate is decided
            while not self.conn.closed:
                if isinstance(self._next(), Closed):
                    break
            self._flush()  # a QUIT said on a refused greeting

    # ---- the transcript (sendmail -v) -----------------------------------------------------------
    def _log_sent(self, data: bytes) -> None:
        if self.log and not self._in_content:
            for line in data.decode("utf-8", "replace").splitlines():
                self.log(f">>> {line}")

    def _transcribe(self, chunk: bytes) -> None:
        if not self.log:
            return
        *lines, self._heard = (self._heard + chunk).split(b"\n")
        for line in lines:
            self.log(line.rstrip(b"\r").decode("utf-8", "replace"))


def _check(event: ClientEvent) -> None:
    """A reply the client made up for the daemon (garbage, EOF, timeout) means the
    connection is lost; a reply the daemon sent, even a 421, is an answer."""
    if isinstance(event, SessionFailed):
        replies = [event.reply]
    elif isinstance(event, TransactionDone):
        replies = [r.reply for r in event.result.replies]
    else:
        return
    lost = next((reply for reply in replies if not reply.from_peer), None)
    if lost is not None:
        raise ConnectionLostError(lost.text)


def _ours(reply: Reply) -> Reply:
    """Our own daemon, not a remote peer: reports must not quote it as a remote MTA."""
    return Reply(reply.code, reply.status, reply.lines)


def transaction(envelope: SubmissionEnvelope, size: int) -> Transaction:
    """The client's transaction; ``ValueError`` for a value SMTP has no word for."""
    params = MailParams(
        size=size,
        body=BodyType(envelope.body_type) if envelope.body_type else BodyType.SEVEN_BIT,
        smtputf8=envelope.smtputf8,
        ret=Ret(envelope.ret) if envelope.ret else None,
        envid=envelope.envid,
    )
    recipients = [
        TransactionRecipient(r.address, _notify(r.notify), r.orcpt) for r in envelope.recipients
    ]
    return Transaction(envelope.sender, recipients, params)


def _notify(value: str | None) -> frozenset[Notify] | None:
    return None if value is None else frozenset(Notify(kind) for kind in value.split(","))


def stages(envelope: SubmissionEnvelope, done: TransactionResult) -> Result:
    """Per recipient replies as submission stages: refused at RCPT, or accepted there and
    then decided by MAIL, DATA or the end of data."""
    result = Result()
    for rcpt, decided in zip(envelope.recipients, done.replies, strict=True):
        reply = _ours(decided.reply)
        if decided.phase is Phase.RCPT:
            result.refused.append((rcpt, reply))
            continue
        if decided.phase is Phase.MAIL:
            result.failure = ("mail", reply)
            continue
        result.accepted.append(rcpt)
        if decided.phase is Phase.END:
            result.final = reply
        if not reply.positive:
            result.failure = (_STAGES.get(decided.phase, "data"), reply)
    if result.failure is None and not result.accepted:
        result.failure = ("rcpt", result.refused[-1][1])
    return result
