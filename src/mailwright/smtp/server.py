"""The SMTP/LMTP server state machine (sans-I/O).

Feed received bytes with ``receive``; take events with ``next_event``; answer
decision events with ``respond``; send what ``data_to_send`` returns. The core
enforces syntax, command sequence (503), RFC 2920 pipelining rules, line and
size limits and the recipient limit on its own, answering those itself, so the
driver only applies policy. It never touches a socket.

Trusts nothing from the peer: every byte sequence yields a reply, never an
exception. Refusals it answers on its own that an administrator must see (bad
MAIL/RCPT syntax, SIZE over the limit, too many recipients or errors, improper
pipelining) are queued as ``events.Refusal`` for the driver to log and count
(``take_refusals``). Reads its limits from ``ServerSettings``.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, NamedTuple

from mailwright.core.reply import Reply
from mailwright.smtp import events as ev
from mailwright.smtp.command import (
    CommandError,
    ascii_number,
    parse_mail,
    parse_rcpt,
    split_command,
)
from mailwright.smtp.data import BdatReader, ContentChecks, DataLimits, DataReader
from mailwright.smtp.extensions import Extensions


@dataclass(frozen=True, slots=True)
class ServerSettings:
    hostname: str = "localhost"
    lmtp: bool = False
    data_limits: DataLimits = field(default_factory=DataLimits)
    max_recipients: int = 1000
    max_command_line: int = 2048
    max_bad_commands: int = 20
    max_junk_commands: int = 100  # NOOP, RSET, HELP, VRFY, EXPN per session
    vrfy: bool = False
    requiretls: bool = True  # RFC 8689, offered over TLS only (never on LMTP)
    chunking: bool = True
    smtputf8: bool = True
    dsn: bool = True
    reject_early_talkers: bool = True
    # RFC 2920 3.1 enforcement (nothing may follow EHLO/HELO/DATA unanswered). Off only for
    # local, trusted channels (sendmail -bs, the local socket), where scripts send batches.
    strict_pipelining: bool = True
    # Postfix's strict_rfc821_envelopes: refuse MAIL FROM:/RCPT TO: paths without <>
    strict_envelopes: bool = False
    # an unknown command is a decision (``ev.Unknown``): the driver may answer it with a
    # milter's reply instead of the 500 (Postfix); off: answered 500 at once, event for logs
    decide_unknown: bool = False


class State(Enum):
    PRE_GREETING = auto()
    COMMAND = auto()
    DECIDING = auto()
    DATA = auto()
    BDAT = auto()
    AUTH = auto()  # waiting for a SASL response line
    TLS = auto()  # STARTTLS answered; waiting for the driver to upgrade
    CLOSED = auto()


# RFC 2920 3.1: these must be last in a pipelined group; data after them is a violation
_GROUP_ENDERS_STRICT = frozenset({"EHLO", "HELO", "LHLO", "DATA", "STARTTLS"})

BDAT_SIZE_DIGITS = 20
MAX_PENDING_REFUSALS = 1000


def _r(code: int, status: str | None, *text: str) -> Reply:
    return Reply.of(code, status, *text)


_UNRECOGNIZED = _r(500, "5.5.1", "Command unrecognized")


class _Problem(NamedTuple):
    """Why a command line is refused before it is parsed."""

    text: str


_GO_AHEAD = _r(354, None, "End data with <CR><LF>.<CR><LF>").encode(enhanced=False)


# the same for every session of a host: made once
@functools.lru_cache(maxsize=16)
def _greeting(hostname: str) -> Reply:
    return _r(220, None, f"{hostname} ESMTP Mailwright")


@functools.lru_cache(maxsize=16)
def _closing(hostname: str) -> bytes:
    return _r(221, "2.0.0", f"{hostname} closing connection").encode()


class ServerConnection:
    """One SMTP or LMTP session from the server's side."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.state = State.PRE_GREETING
        self.hello: str | None = None  # EHLO/HELO/LHLO name once accepted
        self.esmtp = False
        self.tls = False
        self.tls_available = False
        self.auth_mechanisms: tuple[str, ...] = ()
        self.auth_requires_tls = False  # AUTH neither offered nor accepted (538) before TLS
        self.authenticated = False
        self.early_talker = False
        self._in = bytearray()
        self._out = bytearray()
        self._pending: ev.Event | None = None
        self._bad = 0
        self._junk = 0
        self._skip_line = False
        self._reader: DataReader | BdatReader | None = None
        self._bdat_last = False
        self._bdat_size = 0
        self._bdat_error: Reply | None = None
        self._refusals: list[ev.Refusal] = []
        self._reset_transaction()

    # ---- transaction state --------------------------------------------------------------
    def _reset_transaction(self) -> None:
        self.in_transaction = False
        self.smtputf8 = False
        self.rcpt_count = 0
        self.rcpt_attempts = 0
        self._bdat_used = False
        self._bdat_failed = False
        self._checks: ContentChecks | None = None

    # ---- driver API ---------------------------------------------------------------------
    def greet(self, reply: Reply | None = None) -> None:
        """Send the greeting (``220``; or ``554`` to refuse the client, then close)."""
        if self.early_talker and self.settings.reject_early_talkers:
            host = self.settings.hostname
            refusal = _r(554, "5.5.0", f"{host} protocol violation: talking before the greeting")
            self._refuse(refusal, "connect", reason="talked before greeting")
            self._close("talked before greeting")
            return
        reply = reply or _greeting(self.settings.hostname)
        self._send(reply, enhanced=False)
        if reply.code != 220:
            self._close("refused at connect")
            return
        self.state = State.COMMAND

    def receive(self, data: bytes) -> None:
        if self.state is State.PRE_GREETING and data:
            self.early_talker = True
        if self.state is not State.CLOSED:
            self._in += data

    def take_refusals(self) -> list[ev.Refusal]:
        """The refusals answered by the core since the last call (for the log and metrics)."""
        out = self._refusals
        if out:  # the common case allocates nothing: this runs before every flush
            self._refusals = []
        return out

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def respond(self, reply: Reply | Sequence[Reply] | None = None) -> None:
        """Answer the pending decision event; ``None`` means the default positive reply."""
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("respond() without a pending decision")
        self.state = State.COMMAND
        if isinstance(pending, ev.ContentEnd):
            self._respond_content_end(reply if reply is not None else pending.problem)
        else:
            assert reply is None or isinstance(reply, Reply)
            _RESPONDERS[type(pending)](self, pending, reply)
        if isinstance(reply, Reply) and reply.code == 421:
            self._close("421 from policy")  # e.g. a milter's 421: say it, then close

    def challenge(self, text: bytes) -> None:
        """AUTH in progress: send ``334 base64(text)`` and wait for the client's line."""
        if not isinstance(self._pending, ev.Auth):
            raise RuntimeError("challenge() outside AUTH")
        self._out += b"334 " + base64.b64encode(text) + b"\r\n"
        self.state = State.AUTH

    @property
    def bdat_in_progress(self) -> bool:
        """A message is arriving in BDAT chunks (the driver's content clock spans them)."""
        return self.in_transaction and self._bdat_used

    @property
    def partial_input(self) -> bool:
        """Received bytes wait for the rest of their line (the driver's command clock)."""
        return bool(self._in)

    def tls_started(self) -> None:
        """The stream is now TLS: forget everything said before (RFC 3207 4.2)."""
        self._in.clear()
        self._skip_line = False
        self._pending = None
        self.tls = True
        self.hello = None
        self.esmtp = False
        self.authenticated = False
        self._reset_transaction()
        self.state = State.COMMAND

    def close(self, reply: Reply | None = None) -> None:
        """The driver ends the session (timeout, shutdown), optionally with a reply."""
        if reply is not None:
            self._send(reply)
        self._close("closed by server")

    def next_event(self) -> ev.Event | None:
        """The next event, or None when more data (or a ``respond``) is needed."""
        while True:
            state = self.state
            if state is State.COMMAND:
                if self._pending_closed is not None:
                    return self._emit_closed()
                line = self._next_line()
                if line is None:
                    if self.state is State.CLOSED:  # a bad line was one too many
                        continue  # the Closed event now, not on some later call
                    return None
                event = self._command(line)
                if event is not None:
                    return event
                continue
            if state in (State.DATA, State.BDAT):
                event = self._content()
                if event is not None:
                    return event
                if self.state is State.COMMAND:
                    continue
                return None
            if state is State.AUTH:
                line = self._next_line()
                if line is None:
                    if self.state is State.CLOSED:
                        continue
                    return None
                if self.state is not State.AUTH:  # a bad line ended the exchange
                    event = self._command(line)
                    if event is not None:
                        return event
                    continue
                self.state = State.DECIDING
                self._pending = ev.Auth("", line)
                return self._pending
            if state is State.CLOSED and self._pending_closed is not None:
                return self._emit_closed()
            return None

    # ---- output -------------------------------------------------------------------------
    def _send(self, reply: Reply, enhanced: bool = True) -> None:
        self._out += reply.encode(enhanced)

    _pending_closed: str | None = None

    def _close(self, reason: str) -> None:
        self.state = State.CLOSED
        self._in.clear()
        self._pending_closed = reason

    def _emit_closed(self) -> ev.Event:
        reason = self._pending_closed or ""
        self._pending_closed = None
        self.state = State.CLOSED
        return ev.Closed(reason)

    def _decide(self, event: ev.Event) -> ev.Event:
        self._pending = event
        self.state = State.DECIDING
        return event

    def _refuse(
        self, reply: Reply, stage: str, arg: str | None = None, reason: str | None = None
    ) -> None:
        """Send a refusal the administrator must see, and record it for the driver."""
        self._send(reply)
        if len(self._refusals) < MAX_PENDING_REFUSALS:  # a driver that never takes them
            self._refusals.append(ev.Refusal(stage, reply, arg, reason))

    def _error(self, reply: Reply, stage: str | None = None, arg: str | None = None) -> None:
        """A bad command; with ``stage`` it is also recorded as a refusal."""
        if stage is None:
            self._send(reply)
        else:
            self._refuse(reply, stage, arg=arg, reason=None if arg else "syntax")
        self._bad += 1
        if self._bad >= self.settings.max_bad_commands:
            self._refuse(
                _r(421, "4.7.0", f"{self.settings.hostname} Too many errors, closing"),
                "command",
                reason="too many errors",
            )
            self._close("too many errors")

    # ---- command lines ------------------------------------------------------------------
    def _next_line(self) -> str | None:
        buf = self._in
        while self.state is not State.CLOSED:
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > self.settings.max_command_line:
                    del buf[: len(buf) - 1]
                    if not self._skip_line:
                        self._skip_line = True
                        self._error(_r(500, "5.5.2", "Line too long"))
                return None
            raw = bytes(buf[:end])
            del buf[: end + 1]
            if self._skip_line:
                self._skip_line = False
                continue
            line = self._line_text(raw)
            if isinstance(line, _Problem):
                self._error(_r(500, "5.5.2", line.text))
                if self.state is State.AUTH:  # the error answers the AUTH command
                    self.state, self._pending = State.COMMAND, None
                continue
            return line
        return None

    def _line_text(self, raw: bytes) -> str | _Problem:
        """A command line (``raw`` up to its LF) as text, or what is wrong with it."""
        if not raw.endswith(b"\r"):
            return _Problem("Bare <LF> in command; lines must end with CRLF")
        if len(raw) + 1 > self.settings.max_command_line:
            return _Problem("Line too long")
        text = raw[:-1]
        if b"\r" in text or b"\0" in text:
            return _Problem("Invalid character in command")
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            return _Problem("Command is not valid UTF-8")

    def _pipelined_after(self, verb: str) -> bool:
        if not self.settings.strict_pipelining and verb != "STARTTLS":
            return False
        return verb in _GROUP_ENDERS_STRICT and bool(self._in)

    def _command(self, line: str) -> ev.Event | None:
        cmd = split_command(line)
        verb = cmd.verb
        if self._pipelined_after(verb):
            if verb == "STARTTLS":
                self._in.clear()  # RFC 3207: never act on plaintext sent after STARTTLS
            else:
                reason = f"improper pipelining after {verb}"
                self._refuse(
                    _r(554, "5.5.0", f"Improper command pipelining after {verb}"),
                    "command",
                    reason=reason,
                )
                self._close(reason)
                return None
        known = verb.isascii() and verb.isalpha()
        method = getattr(self, f"_cmd_{verb.lower()}", None) if known else None
        if method is None:
            if self.settings.decide_unknown:
                return self._decide(ev.Unknown(line))
            self._error(_UNRECOGNIZED)
            return ev.Unknown(line) if self.state is not State.CLOSED else None
        result: ev.Event | None = method(cmd.args)
        return result

    def _respond_unknown(self, event: ev.Unknown, reply: Reply | None) -> None:
        if reply is not None and reply.code == 421:
            self._send(reply)  # respond() closes the session
            return
        self._error(reply if reply is not None and not reply.positive else _UNRECOGNIZED)

    def _junk_command(self) -> bool:
        self._junk += 1
        if self._junk > self.settings.max_junk_commands:
            self._refuse(
                _r(421, "4.7.0", f"{self.settings.hostname} Too many commands, closing"),
                "command",
                reason="too many junk commands",
            )
            self._close("too many junk commands")
            return True
        return False

    def _extensions(self) -> Extensions:
        s = self.settings
        if not self.esmtp:
            return Extensions()
        return Extensions(
            esmtp=True,
            pipelining=True,
            size=s.data_limits.max_size,
            eightbitmime=True,
            smtputf8=s.smtputf8,
            dsn=s.dsn,
            chunking=s.chunking,
            starttls=self.tls_available and not self.tls,
            enhancedstatuscodes=True,
            # AUTH= on MAIL stays valid once logged in, when AUTH is no longer offered
            auth=self.auth_mechanisms if self._auth_allowed else (),
            requiretls=self._requiretls,
        )

    @property
    def _requiretls(self) -> bool:
        """RFC 8689 2: REQUIRETLS only on a TLS session (and not in LMTP, final delivery)."""
        return self.tls and self.settings.requiretls and not self.settings.lmtp

    @property
    def _auth_allowed(self) -> bool:
        return self.tls or not self.auth_requires_tls

    def _cmd_ehlo(self, args: str) -> ev.Event | None:
        return self._hello("EHLO", args)

    def _cmd_helo(self, args: str) -> ev.Event | None:
        return self._hello("HELO", args)

    def _cmd_lhlo(self, args: str) -> ev.Event | None:
        return self._hello("LHLO", args)

    def _hello(self, verb: str, args: str) -> ev.Event | None:
        if self.settings.lmtp != (verb == "LHLO"):
            expected = "LHLO" if self.settings.lmtp else "EHLO or HELO"
            self._error(_r(500, "5.5.1", f"Command unrecognized: this service expects {expected}"))
            return None
        name = args.strip()
        if not name or " " in name:
            self._error(_r(501, "5.5.4", f"Syntax: {verb} hostname"))
            return None
        if self.in_transaction:
            self._reset_transaction()
        return self._decide(ev.Hello(verb, name))

    def _respond_hello(self, event: ev.Hello, reply: Reply | None) -> None:
        if reply is not None and not reply.positive:
            self._send(reply)
            return
        self.hello = event.name
        self.esmtp = event.verb != "HELO"
        first = reply.lines[0] if reply else f"{self.settings.hostname} Hello {event.name}"
        if not self.esmtp:
            self._send(_r(250, None, first), enhanced=False)
            return
        self._send(_r(250, None, first, *self._ehlo_keywords()), enhanced=False)

    def _ehlo_keywords(self) -> list[str]:
        s = self.settings
        size = s.data_limits.max_size
        words = [
            "PIPELINING",
            f"SIZE {size}" if size else "SIZE",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if s.smtputf8:
            words.append("SMTPUTF8")
        if s.chunking:
            words.append("CHUNKING")
        if s.dsn:
            words.append("DSN")
        if self.tls_available and not self.tls:
            words.append("STARTTLS")
        if self.auth_mechanisms and not self.authenticated and self._auth_allowed:
            words.append("AUTH " + " ".join(self.auth_mechanisms))
        if s.vrfy:
            words.append("VRFY")
        if self._requiretls:
            words.append("REQUIRETLS")
        return words

    def _cmd_mail(self, args: str) -> ev.Event | None:
        if self.hello is None:
            self._error(_r(503, "5.5.1", "Send EHLO or HELO first"))
            return None
        if self.in_transaction:
            self._error(_r(503, "5.5.1", "Nested MAIL command"))
            return None
        try:
            sender, params, path, raw = parse_mail(
                args, self._extensions(), strict=self.settings.strict_envelopes
            )
        except CommandError as exc:
            self._error(exc.reply, "mail", _path_of(args))
            return None
        limit = self.settings.data_limits.max_size
        if limit and params.size is not None and params.size > limit:
            self._refuse(TOO_BIG_DECLARED, "mail", arg=path)
            return None
        return self._decide(ev.MailFrom(sender, params, path, raw))

    def _respond_mail(self, event: ev.MailFrom, reply: Reply | None) -> None:
        if reply is not None and not reply.positive:
            self._send(reply)
            return
        self.in_transaction = True
        self.smtputf8 = event.params.smtputf8
        sender = "<>" if event.sender is None else f"<{event.sender}>"
        self._send(reply or _r(250, "2.1.0", f"Sender {sender} OK"))

    def _cmd_rcpt(self, args: str) -> ev.Event | None:
        if not self.in_transaction:
            self._error(_r(503, "5.5.1", "Need MAIL before RCPT"))
            return None
        if self._bdat_used:
            self._error(_r(503, "5.5.1", "RCPT not allowed after BDAT"))
            return None
        try:
            recipient, path, raw = parse_rcpt(
                args, self._extensions(), utf8=self.smtputf8, strict=self.settings.strict_envelopes
            )
        except CommandError as exc:
            self.rcpt_attempts += 1
            self._error(exc.reply, "rcpt", _path_of(args))
            return None
        self.rcpt_attempts += 1
        if self.rcpt_count >= self.settings.max_recipients:
            self._refuse(_r(452, "4.5.3", "Too many recipients"), "rcpt", arg=path)
            return None
        return self._decide(ev.RcptTo(recipient, path, raw))

    def _respond_rcpt(self, event: ev.RcptTo, reply: Reply | None) -> None:
        if reply is not None and not reply.positive:
            self._send(reply)
            return
        self.rcpt_count += 1
        self._send(reply or _r(250, "2.1.5", f"Recipient <{event.recipient.address}> OK"))

    def _no_recipients(self) -> Reply:
        if not self.in_transaction:
            return _r(503, "5.5.1", "Need MAIL command")
        if self.rcpt_attempts:
            return _r(554, "5.5.1", "No valid recipients")
        return _r(503, "5.5.1", "Need RCPT command")

    def _cmd_data(self, args: str) -> ev.Event | None:
        if args:
            self._error(_r(501, "5.5.4", "DATA takes no arguments"))
            return None
        if not self.rcpt_count:
            self._error(self._no_recipients())
            return None
        if self._bdat_used:
            self._error(_r(503, "5.5.1", "DATA not allowed after BDAT"))
            return None
        return self._decide(ev.DataStart(bdat=False))

    def _respond_data(self, event: ev.DataStart, reply: Reply | None) -> None:
        if event.bdat:
            self._respond_bdat_start(reply)
            return
        if reply is not None and reply.code != 354:
            self._send(reply)
            return
        if reply is None:
            self._out += _GO_AHEAD
        else:
            self._send(reply, enhanced=False)
        reader = DataReader(self.settings.data_limits)
        self._checks = reader.checks
        self._reader = reader
        self.state = State.DATA

    def _cmd_bdat(self, args: str) -> ev.Event | None:
        if not self.settings.chunking or not self.esmtp:
            self._error(_r(500, "5.5.1", "Command unrecognized"))
            return None
        parts = [p for p in args.split(" ") if p]  # str.split() would split at U+2000 too
        size = ascii_number(parts[0], BDAT_SIZE_DIGITS) if parts else None
        if size is None or len(parts) > 2 or (len(parts) == 2 and not _is_last(parts[1])):
            # without a valid size we cannot know how much to skip: the session is lost
            reply = _r(501, "5.5.4", "Syntax: BDAT size [LAST] (size in ASCII digits); closing")
            self._refuse(reply, "data", reason="bad BDAT syntax")
            self._close("bad BDAT syntax")
            return None
        self._bdat_size = size
        self._bdat_last = len(parts) == 2
        error: Reply | None = None
        if not self.rcpt_count:
            error = self._no_recipients()
        elif self._bdat_failed:
            error = _r(503, "5.5.1", "Previous BDAT failed; send RSET")
        if error is not None:
            self._start_chunk(error)
            return None
        if not self._bdat_used:
            self._bdat_used = True
            self._checks = ContentChecks(self.settings.data_limits)
            return self._decide(ev.DataStart(bdat=True))
        self._start_chunk(None)
        return None

    def _respond_bdat_start(self, reply: Reply | None) -> None:
        if reply is not None and not reply.positive:
            self._bdat_failed = True
            self._start_chunk(reply)
            return
        self._start_chunk(None)

    def _start_chunk(self, error: Reply | None) -> None:
        """Read the announced octets; with ``error`` they are discarded, then answered."""
        checks = self._checks or ContentChecks(self.settings.data_limits)
        self._bdat_error = error
        self._reader = BdatReader(self._bdat_size, checks)
        self.state = State.BDAT

    def _content(self) -> ev.Event | None:
        reader = self._reader
        assert reader is not None
        if reader.done:  # also BDAT 0
            return self._content_done()
        if not self._in:
            return None
        data = bytes(self._in)
        self._in.clear()
        content, leftover = reader.feed(data)
        if leftover:
            self._in[0:0] = leftover
        if content and self._bdat_error is None:
            return ev.Content(content)
        if reader.done:
            return self._content_done()
        return None

    def _content_done(self) -> ev.Event | None:
        if self.state is State.DATA:
            return self._end_of_content()
        self._reader = None
        self.state = State.COMMAND
        if self._bdat_error is not None:
            error, self._bdat_error = self._bdat_error, None
            self._send(error)
            if self._bdat_last:
                self._reset_transaction()
            return None
        if not self._bdat_last:
            self._send(_r(250, "2.0.0", f"{self._bdat_size} octets received"))
            return None
        return self._end_of_content()

    def _end_of_content(self) -> ev.Event:
        self._reader = None
        checks = self._checks
        assert checks is not None
        checks.finish()
        return self._decide(ev.ContentEnd(checks.problem()))

    def _respond_content_end(self, reply: Reply | Sequence[Reply] | None) -> None:
        if self.settings.lmtp:
            replies = self._lmtp_replies(reply)
        else:
            assert reply is None or isinstance(reply, Reply)
            replies = [reply or _r(250, "2.0.0", "Message accepted for delivery")]
        for r in replies:
            self._send(r)
        self._reset_transaction()

    def _lmtp_replies(self, reply: Reply | Sequence[Reply] | None) -> list[Reply]:
        if reply is None:
            reply = _r(250, "2.0.0", "Message accepted for delivery")
        if isinstance(reply, Reply):
            return [reply] * self.rcpt_count
        if len(reply) != self.rcpt_count:
            raise ValueError("LMTP needs one reply per accepted recipient")
        return list(reply)

    def _cmd_rset(self, args: str) -> ev.Event | None:
        if args:
            self._error(_r(501, "5.5.4", "RSET takes no arguments"))
            return None
        if self._junk_command():
            return None
        self._send(_r(250, "2.0.0", "OK"))
        was = self.in_transaction
        self._reset_transaction()
        return ev.Reset("RSET") if was else None

    def _cmd_noop(self, args: str) -> ev.Event | None:
        if not self._junk_command():
            self._send(_r(250, "2.0.0", "OK"))
        return None

    def _cmd_help(self, args: str) -> ev.Event | None:
        if not self._junk_command():
            self._send(_r(214, "2.0.0", *self._help()))
        return None

    def _help(self) -> tuple[str, str]:
        """The commands this session accepts: VRFY and BDAT only when they are on."""
        s = self.settings
        verbs = ["LHLO"] if s.lmtp else ["HELO", "EHLO"]
        verbs += ["MAIL", "RCPT", "DATA"]
        if s.chunking:
            verbs.append("BDAT")
        verbs += ["RSET", "NOOP", "QUIT", "HELP"]
        if s.vrfy:
            verbs.append("VRFY")
        return "Mailwright: commands " + " ".join(verbs), "See RFC 5321"

    def _cmd_vrfy(self, args: str) -> ev.Event | None:
        if self._junk_command():
            return None
        if not self.settings.vrfy:
            self._send(_r(502, "5.5.1", "VRFY command is disabled"))
        elif not args:
            self._error(_r(501, "5.5.4", "Syntax: VRFY address"))
        else:
            self._send(
                _r(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
            )
        return None

    def _cmd_expn(self, args: str) -> ev.Event | None:
        if not self._junk_command():
            self._send(_r(502, "5.5.1", "EXPN command is disabled"))
        return None

    def _cmd_quit(self, args: str) -> ev.Event | None:
        self._out += _closing(self.settings.hostname)
        self._close("QUIT")
        return self._emit_closed()

    def _cmd_starttls(self, args: str) -> ev.Event | None:
        if args:
            self._error(_r(501, "5.5.4", "STARTTLS takes no arguments"))
            return None
        if not self.tls_available or self.tls:
            self._error(
                _r(
                    502 if not self.tls_available else 503,
                    "5.5.1",
                    "TLS not available" if not self.tls_available else "TLS already active",
                )
            )
            return None
        if self.in_transaction:
            self._error(_r(503, "5.5.1", "STARTTLS not allowed inside a transaction"))
            return None
        return self._decide(ev.StartTls())

    def _respond_starttls(self, event: ev.StartTls, reply: Reply | None) -> None:
        reply = reply or _r(220, "2.0.0", "Ready to start TLS")
        self._send(reply)
        if reply.code == 220:
            self.state = State.TLS

    def _cmd_auth(self, args: str) -> ev.Event | None:
        if not self.auth_mechanisms or not self.esmtp:
            self._error(
                _r(
                    503 if self.auth_mechanisms else 502,
                    "5.5.1",
                    "AUTH not available" if not self.auth_mechanisms else "Send EHLO first",
                )
            )
            return None
        if self.authenticated:
            self._error(_r(503, "5.5.1", "Already authenticated"))
            return None
        if self.in_transaction:
            self._error(_r(503, "5.5.1", "AUTH not allowed inside a transaction"))
            return None
        parts = args.split(" ")
        mech = parts[0].upper() if parts[0].isascii() else parts[0]  # no "PLAIN" from U+0131
        if not mech or len(parts) > 2:
            self._error(_r(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))
            return None
        if mech not in self.auth_mechanisms:
            self._error(_r(504, "5.5.4", "Unrecognized authentication mechanism"))
            return None
        if not self._auth_allowed:
            self._error(
                _r(538, "5.7.11", "Encryption required for requested authentication mechanism")
            )
            return None
        return self._decide(ev.Auth(mech, parts[1] if len(parts) == 2 else None))

    def _respond_auth(self, event: ev.Auth, reply: Reply | None) -> None:
        reply = reply or _r(235, "2.7.0", "Authentication successful")
        self._send(reply)
        if reply.code == 235:
            self.authenticated = True
        elif reply.permanent:
            self._bad += 1


TOO_BIG_DECLARED = Reply.of(552, "5.3.4", "Message size exceeds fixed maximum message size")


def _is_last(word: str) -> bool:
    return word.isascii() and word.upper() == "LAST"  # U+017F upper-cases to "S"


def _path_of(args: str) -> str | None:
    """The address part of a refused ``FROM:``/``TO:`` argument, for the log (bounded)."""
    _, colon, rest = args.partition(":")
    if not colon:
        return None
    return rest.strip(" ").split(" ", 1)[0][:256] or None


def decode_sasl(line: str) -> bytes | None:
    """A client's SASL response line: None for ``*`` (cancel), else the decoded bytes."""
    if line == "*":
        return None
    if line == "=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64") from None


# respond(): the handler of each kind of pending decision
_RESPONDERS: dict[type[ev.Event], Callable[[ServerConnection, Any, Reply | None], None]] = {
    ev.Hello: ServerConnection._respond_hello,
    ev.MailFrom: ServerConnection._respond_mail,
    ev.RcptTo: ServerConnection._respond_rcpt,
    ev.DataStart: ServerConnection._respond_data,
    ev.StartTls: ServerConnection._respond_starttls,
    ev.Auth: ServerConnection._respond_auth,
    ev.Unknown: ServerConnection._respond_unknown,
}
