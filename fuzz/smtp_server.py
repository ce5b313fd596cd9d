"""Fuzz target: the SMTP/LMTP server state machine (``smtp/server.py``) on any byte stream.

The input is everything a client sends after the greeting. It is fed whole, one octet
at a time, and in pieces cut where a seed taken from the input says, under three
settings (the defaults; small limits with AUTH, STARTTLS, VRFY, strict envelopes and
unknown commands as decisions; LMTP normalising bare line endings). A driver answers
every decision as the edge session would: it accepts, except for paths that contain
``reject``, ``tempfail`` or ``close``. Checks:

- the core never raises: any byte sequence only gets replies;
- every reply line is ``NNN`` (200-599), ``-`` or space, then UTF-8 text without CR or
  LF, ending in CRLF; the lines of one reply share one code; an enhanced status code
  has the class of its reply code;
- nothing accepts a message but the driver's answer to a ``ContentEnd`` event (the core
  never sends its default "accepted" text, and every acceptance had its event);
- fed octet by octet, a DATA message ends right after CRLF "." CRLF and never
  elsewhere: a bare LF or CR never ends DATA (SMTP smuggling);
- an accepted message obeys the limits: no bare CR or LF (reject policy), no more
  octets than ``max_size``, no line longer than ``max_line``;
- where pipelining cannot change the answers (not strict, no STARTTLS in the input),
  the replies' codes and the events are the same however the stream was cut.
"""

from __future__ import annotations

import random
import re
import sys
import zlib
from dataclasses import dataclass, field

from _harness import fuzz, instrumented

with instrumented(__name__):
    from mailwright.core.reply import Reply
    from mailwright.smtp import events as ev
    from mailwright.smtp.data import BareLinePolicy, DataLimits
    from mailwright.smtp.server import ServerConnection, ServerSettings, State

ACCEPTED = "fuzz driver accepted the message"
DEFAULT_ACCEPT_TEXT = b"Message accepted for delivery"
SASL_OK = "dGVzdA=="  # base64 of "test": the one credential the driver accepts


@dataclass(frozen=True)
class Config:
    settings: ServerSettings
    tls: bool = True
    auth: tuple[str, ...] = ("PLAIN", "LOGIN")
    auth_requires_tls: bool = False


CONFIGS = (
    Config(ServerSettings(hostname="mx.test")),
    Config(
        ServerSettings(
            hostname="small.test",
            data_limits=DataLimits(max_size=600, max_line=80),
            max_recipients=3,
            max_command_line=128,
            max_bad_commands=8,
            max_junk_commands=8,
            vrfy=True,
            strict_pipelining=False,
            strict_envelopes=True,
            decide_unknown=True,
        ),
        auth_requires_tls=True,
    ),
    Config(
        ServerSettings(
            hostname="lmtp.test",
            lmtp=True,
            data_limits=DataLimits(max_line=200, bare_lines=BareLinePolicy.NORMALIZE),
            strict_pipelining=False,
            smtputf8=False,
            dsn=False,
        ),
        tls=False,
        auth=(),
    ),
)


@dataclass
class Session:
    """One run of the core: what it said, what it emitted, what the driver accepted."""

    config: Config
    octetwise: bool
    conn: ServerConnection = field(init=False)
    output: bytearray = field(default_factory=bytearray)
    events: list[tuple[object, ...]] = field(default_factory=list)
    accepted: int = 0  # acceptance lines the driver asked for
    fed: bytearray = field(default_factory=bytearray)
    _content: bytearray = field(default_factory=bytearray)
    _bdat: bool = False

    def __post_init__(self) -> None:
        conn = ServerConnection(self.config.settings)
        conn.tls_available = self.config.tls
        conn.auth_mechanisms = self.config.auth
        conn.auth_requires_tls = self.config.auth_requires_tls
        conn.greet()
        self.conn = conn
        self.output += conn.data_to_send()

    def feed(self, chunk: bytes) -> None:
        self.fed += chunk
        self.conn.receive(chunk)
        while (event := self.conn.next_event()) is not None:
            self._handle(event)
        self.conn.take_refusals()
        self.output += self.conn.data_to_send()

    def _handle(self, event: ev.Event) -> None:
        conn = self.conn
        deciding = conn.state is State.DECIDING
        if isinstance(event, ev.Content):
            self._content += event.data
            return
        self.events.append(_summary(event))
        if isinstance(event, ev.ContentEnd):
            self._content_end(event)
        elif isinstance(event, ev.StartTls):
            conn.respond(None)
            if conn.state is State.TLS:
                conn.tls_started()  # the driver's handshake, done at once
        elif isinstance(event, ev.Auth):
            self._auth(event)
        elif isinstance(event, ev.DataStart):
            self._bdat = event.bdat
            conn.respond(None)
        elif isinstance(event, ev.Hello | ev.MailFrom | ev.RcptTo):
            conn.respond(_policy(_path_of(event)))
        elif isinstance(event, ev.Unknown) and deciding:
            conn.respond(_policy(event.line))

    def _content_end(self, event: ev.ContentEnd) -> None:
        content = bytes(self._content)
        self._content.clear()
        if not self._bdat and self.octetwise:
            assert self.fed.endswith(b"\r\n.\r\n"), f"DATA ended after {bytes(self.fed[-8:])!r}"
        if event.problem is not None:
            self.conn.respond(None)
            return
        _check_message(content, self.config.settings.data_limits)
        self.events.append(("message", content))
        self.accepted += self.conn.rcpt_count if self.config.settings.lmtp else 1
        self.conn.respond(Reply.of(250, "2.0.0", ACCEPTED))

    def _auth(self, event: ev.Auth) -> None:
        if event.mechanism and event.initial is None:
            self.conn.challenge(b"")
            return
        # the initial response, or (no mechanism) the client's line after the 334
        if event.initial == SASL_OK:
            self.conn.respond(Reply.of(235, "2.7.0", "Authentication successful"))
        else:
            self.conn.respond(Reply.of(535, "5.7.8", "Authentication credentials invalid"))


def _path_of(event: ev.Hello | ev.MailFrom | ev.RcptTo) -> str:
    if isinstance(event, ev.Hello):
        return event.name
    return event.raw_path


def _policy(text: str) -> Reply | None:
    """The driver's answer to a decision: accept, unless the text asks otherwise."""
    lowered = text.lower()
    if "reject" in lowered:
        return Reply.of(550, "5.7.1", "Rejected by the fuzz driver")
    if "tempfail" in lowered:
        return Reply.of(451, "4.7.1", "Try again later")
    if "close" in lowered:
        return Reply.of(421, "4.7.0", "Closing at the fuzz driver's request")
    return None


def _summary(event: ev.Event) -> tuple[object, ...]:
    """An event as comparable values (addresses as text; Content is merged elsewhere)."""
    if isinstance(event, ev.MailFrom):
        return ("mail", str(event.sender), event.raw_path, tuple(event.raw_params))
    if isinstance(event, ev.RcptTo):
        return ("rcpt", str(event.recipient.address), event.raw_path, tuple(event.raw_params))
    if isinstance(event, ev.ContentEnd):
        problem = event.problem
        return ("end", None if problem is None else (problem.code, problem.status))
    if isinstance(event, ev.Hello):
        return ("hello", event.verb, event.name)
    if isinstance(event, ev.DataStart):
        return ("data", event.bdat)
    if isinstance(event, ev.Auth):
        return ("auth", event.mechanism, event.initial)
    if isinstance(event, ev.Unknown):
        return ("unknown", event.line)
    if isinstance(event, ev.Reset):
        return ("reset", event.reason)
    if isinstance(event, ev.Closed):
        return ("closed", event.reason)
    return (type(event).__name__,)


def _check_message(content: bytes, limits: DataLimits) -> None:
    if limits.bare_lines is BareLinePolicy.REJECT:
        crlf = content.count(b"\r\n")
        assert content.count(b"\r") == crlf == content.count(b"\n"), "bare CR or LF accepted"
    if limits.max_size:
        assert len(content) <= limits.max_size, "message over max_size accepted"
    if limits.max_line:
        longest = max((len(line) + 2 for line in content.split(b"\r\n")), default=0)
        assert longest <= limits.max_line, f"line of {longest} octets accepted"


_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])([^\r\n]*)")
_ENHANCED = re.compile(rb"([245])\.[0-9]{1,3}\.[0-9]{1,3} ")


def check_replies(output: bytes) -> list[tuple[bytes, ...]]:
    """Every reply line well formed; returns (code, separator, enhanced code) per line."""
    output.decode("utf-8")
    assert not output or output.endswith(b"\r\n"), f"unterminated reply {output[-40:]!r}"
    shape: list[tuple[bytes, ...]] = []
    code_of_reply: bytes | None = None
    for line in output.split(b"\r\n")[:-1]:
        match = _REPLY_LINE.fullmatch(line)
        assert match is not None, f"malformed reply line {line!r}"
        code, sep, text = match.groups()
        assert code_of_reply in (None, code), f"code changes inside a reply: {line!r}"
        code_of_reply = code if sep == b"-" else None
        enhanced = _ENHANCED.match(text)
        if enhanced is not None:
            assert enhanced.group(1) == code[:1], f"enhanced code of another class: {line!r}"
        shape.append((code, sep, enhanced.group(0) if enhanced else b""))
    assert code_of_reply is None, "multi-line reply without its last line"
    return shape


def _pieces(data: bytes) -> list[bytes]:
    rng = random.Random(zlib.crc32(data))
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, 1 + len(data) // 16)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _run(config: Config, chunks: list[bytes], octetwise: bool = False) -> Session:
    session = Session(config, octetwise)
    for chunk in chunks:
        session.feed(chunk)
    output = bytes(session.output)
    assert DEFAULT_ACCEPT_TEXT not in output, "the core accepted a message on its own"
    accepted = output.count(ACCEPTED.encode())
    assert accepted == session.accepted, f"{accepted} acceptances for {session.accepted}"
    return session


def check(data: bytes) -> None:
    for config in CONFIGS:
        whole = _run(config, [data])
        octets = _run(config, [data[i : i + 1] for i in range(len(data))], octetwise=True)
        pieces = _run(config, _pieces(data))
        shapes = [check_replies(bytes(s.output)) for s in (whole, octets, pieces)]
        if config.settings.strict_pipelining or b"STARTTLS" in data.upper():
            continue  # RFC 2920 and 3207: what follows these may depend on the cut
        assert shapes[0] == shapes[1] == shapes[2], "replies depend on how the stream is cut"
        assert whole.events == octets.events == pieces.events, "events depend on the cut"


if __name__ == "__main__":
    fuzz(check)
    sys.exit(0)
