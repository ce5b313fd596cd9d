"""A small blocking SMTP client for local submission over the daemon's Unix socket.

Used by ``sendmail``, by ``mailwright send`` and by the daemon's maildrop pickup (over a
socket pair), so every local message crosses the same SMTP dialogue and the same server
checks. It speaks just what submission needs: EHLO, MAIL with SIZE/BODY/SMTPUTF8/RET/
ENVID, pipelined RCPTs with NOTIFY/ORCPT, DATA with dot-stuffing done while streaming,
QUIT. Replies are framed by the sans-I/O ``smtp.reply.ReplyParser`` and come back as
``core.reply.Reply``. It does not use the full client state machine (``smtp.client``):
importing that (dataclasses, the address grammar) would more than double ``sendmail``'s
start-up time; everything it loads is kept light.

Trusts the server's replies only as far as their syntax; any malformed reply or broken
connection is a ``ConnectionLostError`` (the caller treats it as a temporary failure).
Reads no settings.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable

from mailwright.core.reply import Reply
from mailwright.core.submission import Rcpt, SubmissionEnvelope
from mailwright.smtp.reply import ReplyError, ReplyParser

RCPT_BATCH = 100  # pipelined RCPTs per write; keeps both socket buffers from filling
DEFAULT_TIMEOUT = 300.0  # RFC 5321 4.5.3.2 asks clients for 5-10 minutes
Transcript = Callable[[str], None]


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
        self.log = log
        self._parser = ReplyParser()

    # ---- wire -----------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionLostError(f"sending: {exc}") from None

    def reply(self) -> Reply:
        """The next complete reply, framed and its status split off by ``smtp.reply``."""
        while True:
            try:
                reply = self._parser.next_reply()
            except ReplyError as exc:
                raise ConnectionLostError(f"not an SMTP reply: {exc}") from None
            if reply is not None:
                break
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise ConnectionLostError(f"receiving: {exc}") from None
            if not chunk:
                raise ConnectionLostError("the server closed the connection")
            self._parser.feed(chunk)
        if self.log:
            for line in reply.encode().decode("utf-8").splitlines():
                self.log(line)
        # our own daemon, not a remote peer: reports must not quote it as a remote MTA
        return Reply(reply.code, reply.status, reply.lines)

    def command(self, line: str) -> Reply:
        self._commands([line])
        return self.reply()

    def _commands(self, lines: Iterable[str]) -> None:
        out = []
        for line in lines:
            if self.log:
                self.log(f">>> {line}")
            out.append(line.encode("utf-8") + b"\r\n")
        self._send(b"".join(out))

    # ---- the dialogue -----------------------------------------------------------------------
    def submit(self, envelope: SubmissionEnvelope, content: Iterable[bytes], size: int) -> Result:
        """One message; ``content`` yields the CRLF message in chunks, ``size`` octets long."""
        result = Result()
        greeting = self.reply()
        if greeting.code != 220:
            result.failure = ("connect", greeting)
            return result
        ehlo = self.command("EHLO localhost")
        if ehlo.code != 250:
            result.failure = ("ehlo", ehlo)
            return result
        if not self._envelope(envelope, size, result):
            self._quit()
            return result
        go = self.command("DATA")
        if go.code != 354:
            result.failure = ("data", go)
            self._quit()
            return result
        self._send_content(content)
        result.final = self.reply()
        if not result.final.positive:
            result.failure = ("end of data", result.final)
        self._quit()
        return result

    def _envelope(self, envelope: SubmissionEnvelope, size: int, result: Result) -> bool:
        mail = f"MAIL FROM:<{envelope.sender}> " + " ".join(mail_parameters(envelope, size))
        self._commands([mail.rstrip()])
        pending = list(envelope.recipients)
        first = True
        while pending:
            batch, pending = pending[:RCPT_BATCH], pending[RCPT_BATCH:]
            self._commands(rcpt_command(r) for r in batch)
            if first:
                first = False
                answer = self.reply()
                if not answer.positive:
                    result.failure = ("mail", answer)
                    for _ in batch:
                        self.reply()  # "503 Need MAIL": read to stay in step
                    return False
            for rcpt in batch:
                answer = self.reply()
                if answer.positive:
                    result.accepted.append(rcpt)
                else:
                    result.refused.append((rcpt, answer))
        if not result.accepted:
            last = result.refused[-1][1] if result.refused else Reply.of(554, None)
            result.failure = ("rcpt", last)
            return False
        return True

    def _send_content(self, content: Iterable[bytes]) -> None:
        stuffer = DotStuffer()
        for chunk in content:
            data = stuffer.feed(chunk)
            if data:
                self._send(data)
        self._send(stuffer.end())
        if self.log:
            self.log(">>> .")

    def _quit(self) -> None:
        with contextlib.suppress(ConnectionLostError):  # the message's fate is decided
            self.command("QUIT")


def mail_parameters(envelope: SubmissionEnvelope, size: int) -> list[str]:
    params = [f"SIZE={size}"]
    if envelope.body_type:
        params.append(f"BODY={envelope.body_type}")
    if envelope.smtputf8:
        params.append("SMTPUTF8")
    if envelope.ret:
        params.append(f"RET={envelope.ret}")
    if envelope.envid:
        from mailwright.core import xtext  # rare (-V): its regexes cost start-up time

        params.append(f"ENVID={xtext.encode(envelope.envid)}")
    return params


def rcpt_command(rcpt: Rcpt) -> str:
    line = f"RCPT TO:<{rcpt.address}>"
    if rcpt.notify:
        line += f" NOTIFY={rcpt.notify}"
    if rcpt.orcpt:
        line += f" ORCPT={rcpt.orcpt}"
    return line


class DotStuffer:
    """RFC 5321 4.5.2 transparency while streaming: a line starting with "." gets another.

    Chunks are cut after their last line end, so a line start is never split.
    """

    def __init__(self) -> None:
        self._carry = b""
        self._ended = True  # no data yet, or the last data ended with CRLF

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        cut = data.rfind(b"\n") + 1
        self._carry = data[cut:]
        return self._stuff(data[:cut])

    def _stuff(self, lines: bytes) -> bytes:
        if not lines:
            return b""
        out = lines.replace(b"\n.", b"\n..")
        if out.startswith(b"."):
            out = b"." + out
        self._ended = out.endswith(b"\r\n")
        return out

    def end(self) -> bytes:
        tail = self._stuff(self._carry)
        self._carry = b""
        if not tail and not self._ended:
            tail = b"\r\n"
        elif tail and not tail.endswith(b"\r\n"):
            tail += b"\r\n"
        return tail + b".\r\n"
