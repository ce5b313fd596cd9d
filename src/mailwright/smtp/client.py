"""The SMTP/LMTP client state machine (sans-I/O), the mirror of ``smtp.server``.

Feed received bytes with ``receive`` (and ``receive_eof``); take events with
``next_event``; call ``begin``/``send_content``/``end_content``/``starttls``/
``reset``/``quit`` when an event says so; send what ``data_to_send`` returns.
``waiting_for`` names the command whose reply is awaited, so the driver can
apply the RFC 5321 4.5.3.2 timeout for it (and call ``fail`` when it expires).

The core does the protocol: the greeting, EHLO with a HELO fallback (or LHLO),
the EHLO keywords, MAIL/RCPT parameters limited to what the peer offered,
RFC 2920 pipelining (MAIL, every RCPT and DATA in one write) or one command at
a time, DATA with dot-stuffing and CRLF normalisation or BDAT (RFC 3030),
RSET before a transaction on a reused session, per-recipient replies (LMTP:
one reply per accepted recipient after the content, RFC 2033 4.2), QUIT.
``authenticate`` logs in (RFC 4954, PLAIN preferred, else LOGIN) when the
driver has credentials for the peer: only under TLS unless the driver allows
plaintext, and never with the password in any reply, event or exception text.

Trusts nothing from the peer: a malformed or unsolicited reply, a 421, or
bytes pipelined after the 220 to STARTTLS end the session with a temporary
failure for every recipient without a final answer; no exception escapes for
anything the peer sends. Reads its settings from ``ClientSettings``.
"""

from __future__ import annotations

import binascii
from collections import deque
from collections.abc import Callable, Iterable
from enum import Enum, StrEnum, auto

from mailwright.core import xtext
from mailwright.core.envelope import BodyType, MailParams, Notify
from mailwright.core.record import Record, Value
from mailwright.core.reply import Reply
from mailwright.smtp.encoder import MAX_LINE, DotStuffer, LineEndings
from mailwright.smtp.extensions import Extensions as Extensions  # noqa: PLC0414 (delivery uses it)
from mailwright.smtp.reply import ReplyError, ReplyParser


class ClientSettings(Value):
    __slots__ = (
        "bdat_chunk_size",
        "bdat_window",
        "chunking",
        "helo_name",
        "lmtp",
        "max_line",
        "peer",
    )

    def __init__(
        self,
        helo_name: str,
        lmtp: bool = False,
        peer: str = "server",
        chunking: bool = True,
        bdat_chunk_size: int = 128 * 1024,
        bdat_window: int = 8,
        max_line: int = MAX_LINE,
    ) -> None:
        self.helo_name = helo_name  # our host name, sent in EHLO/HELO/LHLO
        self.lmtp = lmtp
        self.peer = peer  # for diagnostics: "mx1.example.org [192.0.2.1]"
        self.chunking = chunking  # use BDAT when the peer offers CHUNKING
        self.bdat_chunk_size = bdat_chunk_size
        self.bdat_window = bdat_window  # BDAT chunks in flight when the peer offers PIPELINING
        # longer lines are folded on the way out (smtp.encoder); 0: sent as they are
        self.max_line = max_line


class Credentials(Value):
    """A login for SMTP AUTH; the password never shows in ``repr`` or ``str``."""

    __slots__ = ("password", "username")

    def __init__(self, username: str, password: str) -> None:
        if not username or _forbidden(username):
            raise ValueError(f"user name {username!r} is empty or has CR, LF or NUL")
        if not password or _forbidden(password):
            raise ValueError(f"the password of {username!r} is empty or has CR, LF or NUL")
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r})"

    def __str__(self) -> str:
        return self.username


AUTH_MECHANISMS = ("PLAIN", "LOGIN")  # what ``authenticate`` can do, in order of preference


class Phase(StrEnum):
    """The command a reply answers; also the stage a recipient's result came from."""

    GREETING = "greeting"
    HELLO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    RSET = "RSET"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    BDAT = "BDAT"
    END = "end of data"
    QUIT = "QUIT"

    def waiting_text(self) -> str:
        if self is Phase.GREETING:
            return "while waiting for the greeting"
        if self is Phase.END:
            return "while waiting for the reply to the end of data"
        return f"while waiting for the reply to {self.value}"


class State(Enum):
    GREETING = auto()
    HELLO = auto()  # EHLO/HELO/LHLO sent
    READY = auto()  # idle: the driver may begin, starttls, reset or quit
    STARTTLS = auto()  # STARTTLS sent
    TLS = auto()  # 220 to STARTTLS: the driver upgrades, then calls tls_started
    AUTH = auto()  # AUTH sent: challenges and responses until 235 or a refusal
    RSET = auto()  # explicit RSET sent
    TRANSACTION = auto()  # MAIL .. DATA, or waiting for the final replies
    CONTENT = auto()  # the driver streams the content
    QUIT = auto()
    CLOSED = auto()


class TransactionRecipient(Value):
    __slots__ = ("address", "notify", "orcpt")

    def __init__(
        self, address: str, notify: frozenset[Notify] | None = None, orcpt: str | None = None
    ) -> None:
        self.address = address  # as it goes between the angle brackets
        self.notify = notify
        self.orcpt = orcpt  # "rfc822;xtext", passed on unchanged


class Transaction(Record):
    __slots__ = ("params", "recipients", "sender")

    def __init__(
        self,
        sender: str,
        recipients: list[TransactionRecipient],
        params: MailParams | None = None,
    ) -> None:
        self.sender = sender  # "" for the null reverse-path
        self.recipients = recipients
        # size, body, smtputf8, requiretls, ret, envid
        self.params = MailParams() if params is None else params


class RecipientReply(Value):
    """The reply that decided one recipient, and which command it answered."""

    __slots__ = ("lost", "phase", "reply")

    def __init__(self, reply: Reply, phase: Phase, lost: bool = False) -> None:
        self.reply = reply
        self.phase = phase
        self.lost = lost  # settled because the session ended, not by the peer's own answer

    @property
    def after_content(self) -> bool:
        return self.phase is Phase.END


class TransactionResult(Record):
    __slots__ = ("bdat", "content_ended", "replies", "session_lost")

    def __init__(
        self,
        replies: list[RecipientReply],
        content_ended: bool,
        session_lost: bool,
        bdat: bool = False,
    ) -> None:
        self.replies = replies  # one per recipient, in order
        self.content_ended = content_ended  # the end of the content was sent: the peer may have it
        self.session_lost = session_lost  # it ended during the transaction (421, EOF, garbage)
        self.bdat = bdat  # the content went (or would have gone) with BDAT rather than DATA


class ClientEvent(Record):
    __slots__ = ()


class _ReplyEvent(ClientEvent):
    __slots__ = ("reply",)

    def __init__(self, reply: Reply) -> None:
        self.reply = reply


class SessionReady(ClientEvent):
    """The EHLO/HELO/LHLO reply (after the greeting, or again after STARTTLS)."""

    __slots__ = ("extensions", "reply")

    def __init__(self, extensions: Extensions, reply: Reply) -> None:
        self.extensions = extensions
        self.reply = reply


class TlsReady(ClientEvent):
    """``220`` to STARTTLS: upgrade the stream now, then call ``tls_started``."""

    __slots__ = ()


class TlsRefused(_ReplyEvent):
    __slots__ = ()


class Authenticated(ClientEvent):
    """``235`` to AUTH: the session is logged in."""

    __slots__ = ("mechanism", "reply")

    def __init__(self, mechanism: str, reply: Reply) -> None:
        self.mechanism = mechanism
        self.reply = reply


class AuthSkipped(ClientEvent):
    """The peer offers no AUTH: the mail goes without logging in (as Postfix does)."""

    __slots__ = ()


class AuthFailed(ClientEvent):
    """Not logged in. ``reply`` is a 4.7.0 temporary failure to report (naming the user,
    never the password); ``peer_reply`` is the peer's refusal, None when nothing was sent."""

    __slots__ = ("peer_reply", "reply")

    def __init__(self, reply: Reply, peer_reply: Reply | None = None) -> None:
        self.reply = reply
        self.peer_reply = peer_reply


class SendContent(ClientEvent):
    """Stream the message with ``send_content``, then call ``end_content``."""

    __slots__ = ()


class TransactionDone(ClientEvent):
    __slots__ = ("result",)

    def __init__(self, result: TransactionResult) -> None:
        self.result = result


class ResetDone(_ReplyEvent):
    __slots__ = ()


class SessionFailed(ClientEvent):
    """The session cannot be used (greeting or hello refused, 421, lost, garbage)."""

    __slots__ = ("phase", "reply")

    def __init__(self, reply: Reply, phase: Phase) -> None:
        self.reply = reply
        self.phase = phase


class Closed(ClientEvent):
    __slots__ = ("reply",)

    def __init__(self, reply: Reply | None) -> None:
        self.reply = reply


def _forbidden(text: str) -> bool:
    """Whether ``text`` holds CR, LF or NUL, which would break a command line (three
    substring tests: no generator, as every command line is checked)."""
    return "\r" in text or "\n" in text or "\0" in text


def _check_text(text: str, what: str) -> None:
    if _forbidden(text):
        raise ValueError(f"{what} contains CR, LF or NUL: {text!r}")


def _b64(text: str) -> str:
    # binascii rather than base64, which costs sendmail start-up time for AUTH it never does
    return binascii.b2a_base64(text.encode("utf-8"), newline=False).decode("ascii")


class _Login:
    """An AUTH exchange in progress: which response comes next."""

    def __init__(self, mechanism: str, credentials: Credentials) -> None:
        self.mechanism = mechanism
        self.credentials = credentials
        self.step = 0  # challenges answered
        self.cancelled = False
        self.unexpected: Reply | None = None  # the challenge we cancelled

    def answer(self) -> str | None:
        """The response to the next 334 challenge, or None when none is due."""
        self.step += 1
        if self.mechanism == "LOGIN" and self.step == 1:
            return self.credentials.username  # "Username:"
        if self.mechanism == "LOGIN" and self.step == 2:
            return self.credentials.password  # "Password:"
        return None


def notify_param(notify: Iterable[Notify]) -> str:
    kinds = set(notify)
    if Notify.NEVER in kinds:
        return "NEVER"
    order = (Notify.SUCCESS, Notify.FAILURE, Notify.DELAY)
    return ",".join(k.value for k in order if k in kinds)


class _Txn:
    """The transaction in progress: who got which reply so far."""

    def __init__(self, txn: Transaction, bdat: bool) -> None:
        self.txn = txn
        self.bdat = bdat
        self.decided: list[RecipientReply | None] = [None] * len(txn.recipients)
        self.accepted: list[int] = []
        self.next_rcpt = 0  # without pipelining: the next RCPT to send
        self.mail_ok = False
        self.content_started = False
        self.content_ended = False
        self.refused = False  # a BDAT chunk or the DATA command was refused

    def decide(self, index: int, reply: Reply, phase: Phase, lost: bool = False) -> None:
        if self.decided[index] is None:
            self.decided[index] = RecipientReply(reply, phase, lost)

    def decide_all(
        self, reply: Reply, phase: Phase, only: Iterable[int] | None = None, lost: bool = False
    ) -> None:
        for i in range(len(self.decided)) if only is None else only:
            self.decide(i, reply, phase, lost)

    def open_accepted(self) -> list[int]:
        return [i for i in self.accepted if self.decided[i] is None]


class ClientConnection:
    """One SMTP or LMTP session from the client's side."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.state = State.GREETING
        self.extensions = Extensions()
        self.tls = False
        self.needs_reset = False  # a transaction happened: RSET before the next one
        self.transactions = 0
        self._parser = ReplyParser()
        self._out = bytearray()
        self._events: deque[ClientEvent] = deque()
        self._expect: deque[tuple[Phase, int]] = deque([(Phase.GREETING, 0)])
        self._hello_verb = "LHLO" if settings.lmtp else "EHLO"
        self._txn: _Txn | None = None
        self._stuffer: DotStuffer | None = None
        self._lines: LineEndings | None = None
        self._bdat_buf = bytearray()
        self._bdat_tail = b""  # the last octet of content so far
        self._bdat_ending = False  # end_content was called; chunks may still wait
        self._bdat_in_flight = 0
        self._auth: _Login | None = None

    # ---- driver API: I/O ------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        if self.state is not State.CLOSED:
            self._parser.feed(data)

    def receive_eof(self) -> None:
        """The peer closed the connection."""
        if self.state is State.CLOSED:
            return
        if self.state is State.QUIT:
            self._closed(None)
            return
        phase = self.waiting_for
        when = phase.waiting_text() if phase else "while idle"
        self._lost(Reply.of(421, "4.4.2", f"Lost connection with {self.settings.peer} {when}"))

    def fail(self, reply: Reply) -> None:
        """The driver gives up on the session (timeout, I/O error): every recipient still
        open gets ``reply``; a transaction in progress ends with ``TransactionDone``."""
        if self.state is State.QUIT:
            self._closed(None)
        elif self.state is not State.CLOSED:
            self._lost(reply)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def output_size(self) -> int:
        """Octets waiting in ``data_to_send`` (lets a driver write content in larger pieces)."""
        return len(self._out)

    @property
    def waiting_for(self) -> Phase | None:
        """The command whose reply is awaited, or None when no reply is due."""
        return self._expect[0][0] if self._expect else None

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def next_event(self) -> ClientEvent | None:
        """The next event, or None when more data (or a driver call) is needed."""
        while not self._events:
            if self.state is State.CLOSED or self.state is State.TLS:
                return None
            try:
                reply = self._parser.next_reply()
            except ReplyError as exc:
                error = f"Protocol error from {self.settings.peer}: {exc}"
                self._lost(Reply.of(451, "4.5.0", error))
                break
            if reply is None:
                return None
            self._on_reply(reply)
        return self._events.popleft() if self._events else None

    # ---- driver API: commands -------------------------------------------------------------
    def starttls(self) -> None:
        self._require(State.READY, "starttls")
        self._send("STARTTLS", Phase.STARTTLS)
        self.state = State.STARTTLS

    def tls_started(self) -> None:
        """The stream is TLS now: forget what the peer said before, say hello again."""
        self._require(State.TLS, "tls_started")
        self._parser.clear()
        self.tls = True
        self.extensions = Extensions()
        self._hello_verb = "LHLO" if self.settings.lmtp else "EHLO"
        self._hello()

    def authenticate(self, credentials: Credentials, *, allow_plaintext: bool = False) -> None:
        """Log in before the first transaction; one of ``Authenticated``, ``AuthSkipped``
        or ``AuthFailed`` follows (or ``SessionFailed`` when the session is lost).

        Without TLS the credentials are sent only when ``allow_plaintext`` says so.
        """
        self._require(State.READY, "authenticate")
        peer = self.settings.peer
        offered = self.extensions.auth
        if not offered:
            self._events.append(AuthSkipped())
            return
        mechanism = next((m for m in AUTH_MECHANISMS if m in offered), None)
        if mechanism is None:
            text = f"{peer} offers no AUTH mechanism we support ({' '.join(offered)})"
            self._events.append(AuthFailed(Reply.of(451, "4.7.0", text)))
            return
        if not self.tls and not allow_plaintext:
            text = f"TLS was not established with {peer}: refusing to send credentials without TLS"
            self._events.append(AuthFailed(Reply.of(451, "4.7.0", text)))
            return
        self._auth = _Login(mechanism, credentials)
        self.state = State.AUTH
        if mechanism == "PLAIN":  # RFC 4616 with the initial response (RFC 4954 4)
            secret = f"\0{credentials.username}\0{credentials.password}"
            self._send_secret(f"AUTH PLAIN {_b64(secret)}")
        else:
            self._send_secret("AUTH LOGIN")

    def reset(self) -> None:
        self._require(State.READY, "reset")
        self._send("RSET", Phase.RSET)
        self.state = State.RSET

    def quit(self) -> None:
        """Send QUIT; ``Closed`` follows on its reply or on EOF. Allowed in any state."""
        if self.state in (State.CLOSED, State.QUIT):
            return
        if self.state in (State.TRANSACTION, State.CONTENT) or self._expect:
            # abandon what is in flight: the driver will not wait for it
            self._expect.clear()
            self._txn = None
        self._send("QUIT", Phase.QUIT)
        self.state = State.QUIT

    def begin(self, transaction: Transaction) -> None:
        """Start a mail transaction; ``SendContent`` (or ``TransactionDone``) follows."""
        self._require(State.READY, "begin")
        if not transaction.recipients:
            raise ValueError("a transaction needs at least one recipient")
        self._mail_command(transaction)  # refuse unsafe text before anything is sent
        for r in transaction.recipients:
            self._rcpt_command(r)
        ext = self.extensions
        bdat = ext.chunking and self.settings.chunking
        txn = _Txn(transaction, bdat)
        self._txn = txn
        self.state = State.TRANSACTION
        self.transactions += 1
        if self.needs_reset:
            self._send("RSET", Phase.RSET)
            self.needs_reset = False
            if not ext.pipelining:
                return  # MAIL follows the reply to RSET
        self._send_mail(txn)

    def _send_mail(self, txn: _Txn) -> None:
        self._send(self._mail_command(txn.txn), Phase.MAIL)
        if self.extensions.pipelining:
            rcpts = [self._rcpt_command(r) for r in txn.txn.recipients]
            for i, line in enumerate(rcpts):
                self._send(line, Phase.RCPT, i)
            txn.next_rcpt = len(rcpts)
            if not txn.bdat:
                self._send("DATA", Phase.DATA)

    def send_content(self, chunk: bytes) -> None:
        """Part of the message (headers, empty line, body), in order; any line endings.

        With BDAT, check ``content_blocked`` after each call: while it is true, read
        replies before sending more (the core sends queued chunks as replies arrive).
        """
        txn = self._txn
        if self.state is not State.CONTENT or txn is None or txn.refused:
            return  # refused mid-stream: the rest is not wanted
        if self._stuffer is not None:
            self._out += self._stuffer.feed(chunk)
            return
        assert self._lines is not None
        data = self._lines.feed(chunk)
        if data:
            self._bdat_buf += data
            self._bdat_tail = data[-1:]
        self._pump_bdat()

    def end_content(self) -> None:
        """The whole message was given; the final reply (or replies) follow."""
        txn = self._txn
        if self.state is not State.CONTENT or txn is None:
            return
        self.state = State.TRANSACTION
        if self._stuffer is not None:
            if not txn.refused:
                self._out += self._stuffer.finish()
                self._expect_final(txn)
            self._stuffer = None
        elif self._lines is not None:
            self._bdat_buf += self._lines.finish()
            if self._bdat_tail not in (b"", b"\n") and not self._bdat_buf.endswith(b"\n"):
                self._bdat_buf += b"\r\n"  # as DATA does: the message ends with a line end
            self._bdat_ending = True
            self._pump_bdat()
        self._maybe_done()

    @property
    def content_refused(self) -> bool:
        """A BDAT chunk was refused: stop sending content, call ``end_content``."""
        return self._txn is not None and self._txn.refused

    @property
    def content_blocked(self) -> bool:
        """BDAT: a whole chunk waits for a reply; read replies before sending more."""
        if self.state is not State.CONTENT or self._lines is None or self.content_refused:
            return False
        return len(self._bdat_buf) >= self.settings.bdat_chunk_size

    def _pump_bdat(self) -> None:
        """Send the chunks that the window allows (one in flight without PIPELINING)."""
        txn = self._txn
        if txn is None or txn.refused or self._lines is None:
            return
        size = self.settings.bdat_chunk_size
        window = self.settings.bdat_window if self.extensions.pipelining else 1
        buf = self._bdat_buf
        while self._bdat_in_flight < window:
            if self._bdat_ending and len(buf) <= size:
                self._out += f"BDAT {len(buf)} LAST\r\n".encode("ascii") + buf
                buf.clear()
                self._lines = None
                self._expect_final(txn)
                return
            if len(buf) < size:
                return
            self._out += f"BDAT {size}\r\n".encode("ascii") + buf[:size]
            del buf[:size]
            self._expect.append((Phase.BDAT, 0))
            self._bdat_in_flight += 1

    def _expect_final(self, txn: _Txn) -> None:
        """The content is complete: SMTP answers once, LMTP once per accepted recipient."""
        txn.content_ended = True
        if self.settings.lmtp:
            for i in txn.open_accepted():
                self._expect.append((Phase.END, i))
        else:
            self._expect.append((Phase.END, -2))

    # ---- output -------------------------------------------------------------------------
    def _require(self, state: State, what: str) -> None:
        if self.state is not state:
            raise RuntimeError(f"{what}() in state {self.state.name}")

    def _send(self, line: str, phase: Phase, index: int = 0) -> None:
        _check_text(line, "command")
        self._out += line.encode("utf-8") + b"\r\n"
        self._expect.append((phase, index))

    def _send_secret(self, line: str) -> None:
        """A line that may carry a password: never quoted in an error."""
        if _forbidden(line):
            raise ValueError("an AUTH line contains CR, LF or NUL")
        self._out += line.encode("utf-8") + b"\r\n"
        self._expect.append((Phase.AUTH, 0))

    def _mail_command(self, txn: Transaction) -> str:
        _check_text(txn.sender, "sender")
        ext = self.extensions
        p = txn.params
        params = []
        if ext.size is not None and p.size:
            params.append(f"SIZE={p.size}")
        if p.body is BodyType.EIGHT_BIT and ext.eightbitmime:
            params.append("BODY=8BITMIME")
        if p.smtputf8 and ext.smtputf8:
            params.append("SMTPUTF8")
        if p.requiretls and ext.requiretls:  # the agent refuses such a peer before (RFC 8689)
            params.append("REQUIRETLS")
        if ext.dsn and p.ret is not None:
            params.append(f"RET={p.ret.value}")
        if ext.dsn and p.envid:
            params.append(f"ENVID={xtext.encode(p.envid)}")
        return " ".join([f"MAIL FROM:<{txn.sender}>", *params])

    def _rcpt_command(self, rcpt: TransactionRecipient) -> str:
        _check_text(rcpt.address, "recipient")
        params = []
        if self.extensions.dsn:
            if rcpt.notify:
                params.append(f"NOTIFY={notify_param(rcpt.notify)}")
            if rcpt.orcpt:
                if any(c.isspace() for c in rcpt.orcpt):
                    raise ValueError(f"ORCPT contains white space: {rcpt.orcpt!r}")
                params.append(f"ORCPT={rcpt.orcpt}")
        return " ".join([f"RCPT TO:<{rcpt.address}>", *params])

    # ---- replies --------------------------------------------------------------------------
    def _on_reply(self, reply: Reply) -> None:
        if not self._expect:
            self._lost(
                Reply.of(
                    451, "4.5.0", f"Protocol error: unexpected reply from {self.settings.peer}"
                )
            )
            return
        phase, index = self._expect.popleft()
        if reply.code == 421 and phase is not Phase.QUIT:
            self._lost(reply, phase)  # RFC 5321 3.8: the server is closing the channel
            return
        _ON_REPLY[phase](self, reply, index)

    def _on_greeting(self, reply: Reply, index: int) -> None:
        if reply.code == 220:
            self._hello()
            return
        self._session_failed(reply, Phase.GREETING)

    def _hello(self) -> None:
        self._send(f"{self._hello_verb} {self.settings.helo_name}", Phase.HELLO)
        self.state = State.HELLO

    def _on_hello(self, reply: Reply, index: int) -> None:
        if reply.code == 250:
            esmtp = self._hello_verb != "HELO"
            self.extensions = Extensions.parse(reply) if esmtp else Extensions()
            self.state = State.READY
            self._events.append(SessionReady(self.extensions, reply))
        elif self._hello_verb == "EHLO" and reply.permanent and not self.tls:
            self._hello_verb = "HELO"  # RFC 5321 3.2: an old server that does not know EHLO
            self._hello()
        else:
            self._session_failed(reply, Phase.HELLO)

    def _on_starttls(self, reply: Reply, index: int) -> None:
        if reply.code != 220:
            self.state = State.READY
            self._events.append(TlsRefused(reply))
            return
        if self._parser.pending:
            # RFC 3207 / CVE-2011-0411 class: never trust plaintext sent after the 220
            self._lost(
                Reply.of(451, "4.5.0", "Protocol error: data pipelined after 220 to STARTTLS")
            )
            return
        self.state = State.TLS
        self._events.append(TlsReady())

    def _on_auth(self, reply: Reply, index: int) -> None:
        login = self._auth
        if login is None:
            return
        if reply.code == 334 and not login.cancelled:
            answer = login.answer()
            if answer is None:  # a challenge more than the mechanism has: cancel it
                login.cancelled = True
                login.unexpected = reply
                self._send_secret("*")
            else:
                self._send_secret(_b64(answer))
            return
        self._auth = None
        self.state = State.READY
        user, peer = login.credentials.username, self.settings.peer
        if reply.code == 235 and not login.cancelled:
            self._events.append(Authenticated(login.mechanism, reply))
            return
        refusal = login.unexpected or reply
        text = f"Authentication as {user} to {peer} failed ({login.mechanism}): {refusal}"
        self._events.append(AuthFailed(Reply.of(451, "4.7.0", text), refusal))

    def _on_rset(self, reply: Reply, index: int) -> None:
        if self.state is State.RSET:
            self.state = State.READY
            self.needs_reset = not reply.positive
            self._events.append(ResetDone(reply))
        elif not reply.positive:
            refused = Reply.of(451, "4.4.2", f"RSET refused by {self.settings.peer}: {reply}")
            self._lost(refused, Phase.RSET)
        elif self._txn is not None and not self.extensions.pipelining:
            self._send_mail(self._txn)

    def _on_mail(self, reply: Reply, index: int) -> None:
        txn = self._txn
        if txn is None:
            return
        if reply.positive:
            txn.mail_ok = True
            if not self.extensions.pipelining:
                self._next_rcpt(txn)
            return
        txn.decide_all(reply, Phase.MAIL)
        self._maybe_done()

    def _next_rcpt(self, txn: _Txn) -> None:
        recipients = txn.txn.recipients
        if txn.next_rcpt < len(recipients):
            i = txn.next_rcpt
            txn.next_rcpt += 1
            self._send(self._rcpt_command(recipients[i]), Phase.RCPT, i)
            return
        self._after_rcpts(txn)

    def _on_rcpt(self, reply: Reply, index: int) -> None:
        txn = self._txn
        if txn is None:
            return
        if reply.positive and txn.mail_ok:
            txn.accepted.append(index)
        else:
            txn.decide(index, reply, Phase.RCPT)
        if not self.extensions.pipelining:
            self._next_rcpt(txn)
        elif txn.bdat and not self._expect:
            self._after_rcpts(txn)
        else:
            self._maybe_done()

    def _after_rcpts(self, txn: _Txn) -> None:
        """Every RCPT is answered (not pipelined DATA): go on to the content, or finish."""
        if not txn.open_accepted():
            self._maybe_done()
        elif txn.bdat:
            self._start_content(txn)
        else:
            self._send("DATA", Phase.DATA)

    def _on_data(self, reply: Reply, index: int) -> None:
        txn = self._txn
        if txn is None:
            return
        if reply.code != 354:
            txn.refused = True
            txn.decide_all(reply, Phase.DATA, txn.open_accepted())
            self._maybe_done()
        elif txn.open_accepted():
            self._start_content(txn)
        else:
            # RFC 2920 3.1: 354 though no recipient was accepted: send an empty message
            self._out += b".\r\n"
            self._expect.append((Phase.END, -1))

    def _start_content(self, txn: _Txn) -> None:
        txn.content_started = True
        self.state = State.CONTENT
        if txn.bdat:
            self._lines = LineEndings(self.settings.max_line)
            self._bdat_buf.clear()
            self._bdat_tail = b""
            self._bdat_ending = False
            self._bdat_in_flight = 0
        else:
            self._stuffer = DotStuffer(self.settings.max_line)
        self._events.append(SendContent())

    def _on_bdat(self, reply: Reply, index: int) -> None:
        self._bdat_in_flight -= 1
        txn = self._txn
        if txn is None:
            return
        if reply.positive:
            self._pump_bdat()
            return
        txn.refused = True
        txn.decide_all(reply, Phase.BDAT, txn.open_accepted())
        self._maybe_done()

    def _on_end(self, reply: Reply, index: int) -> None:
        txn = self._txn
        if txn is None:
            return
        if index == -2:  # SMTP: one reply for every accepted recipient
            txn.decide_all(reply, Phase.END, txn.open_accepted())
        elif index >= 0:  # LMTP: one reply per accepted recipient, in RCPT order
            txn.decide(index, reply, Phase.END)
        self._maybe_done()

    def _on_quit(self, reply: Reply, index: int) -> None:
        self._closed(reply)

    # ---- ends -----------------------------------------------------------------------------
    def _maybe_done(self) -> None:
        txn = self._txn
        if txn is None or self.state is State.CONTENT or self._expect:
            return
        if not self.extensions.pipelining and txn.mail_ok and self._awaiting_more(txn):
            return
        missing = Reply.of(451, "4.5.0", f"Protocol error: no reply from {self.settings.peer}")
        txn.decide_all(missing, Phase.END)
        self._finish(txn, lost=False)

    def _awaiting_more(self, txn: _Txn) -> bool:
        """Step by step: more RCPTs to send, or DATA/content still to come."""
        if txn.next_rcpt < len(txn.txn.recipients):
            return True
        return bool(txn.open_accepted()) and not txn.content_ended and not txn.refused

    def _finish(self, txn: _Txn, lost: bool) -> None:
        replies = [r for r in txn.decided if r is not None]
        result = TransactionResult(replies, txn.content_ended, lost, txn.bdat)
        self._txn = None
        self._stuffer = None
        self._lines = None
        self.needs_reset = True
        if not lost:
            self.state = State.READY
        self._events.append(TransactionDone(result))

    def _lost(self, reply: Reply, phase: Phase | None = None) -> None:
        """The session is over: settle what is open with ``reply`` and close."""
        txn = self._txn
        state = self.state
        if phase is None:
            content = Phase.BDAT if txn is not None and txn.bdat else Phase.DATA
            phase = self.waiting_for or (content if state is State.CONTENT else Phase.HELLO)
        self._expect.clear()
        self.state = State.CLOSED
        self._parser.clear()
        if txn is not None:
            txn.decide_all(reply, phase, lost=True)
            self._finish(txn, lost=True)
        elif state is State.QUIT:
            self._events.append(Closed(None))
        else:
            self._events.append(SessionFailed(reply, phase))

    def _session_failed(self, reply: Reply, phase: Phase) -> None:
        self._expect.clear()
        if reply.permanent:
            self._out += b"QUIT\r\n"  # RFC 5321 3.1: a client refused at connect says QUIT
        self.state = State.CLOSED
        self._events.append(SessionFailed(reply, phase))

    def _closed(self, reply: Reply | None) -> None:
        self._expect.clear()
        self.state = State.CLOSED
        self._events.append(Closed(reply))


# _on_reply: the handler of the reply to each phase's command
_ON_REPLY: dict[Phase, Callable[[ClientConnection, Reply, int], None]] = {
    phase: getattr(ClientConnection, f"_on_{phase.name.lower()}") for phase in Phase
}
