"""Submitting one message locally: over the daemon's socket, else into the maildrop.

The decision table (sysexits, as Sendmail's callers expect):

- the daemon answered ``250`` to the end of data: exit 0. Recipients it refused
  temporarily go to the maildrop (retried by the daemon); refused permanently: a warning.
- the daemon cannot be reached, the connection breaks, or it answers ``4xx`` to the
  message as a whole: the message goes to the maildrop and the exit is 0; only when
  even that fails, 75 (EX_TEMPFAIL).
- a permanent refusal: 67 (EX_NOUSER) when every recipient was refused as unknown or
  malformed (``5.1.x``), 77 (EX_NOPERM) for a policy refusal (``5.7.x``), 65
  (EX_DATAERR) for the content or the sender, 69 (EX_UNAVAILABLE) otherwise.

Standard library only on the socket path (``core.address`` is loaded only to check
addresses before a maildrop write). Settings: the ``SubmitConfig`` view.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from mailwright.config.lite import SubmitConfig
from mailwright.core.reply import Reply
from mailwright.core.submission import Rcpt, SubmissionEnvelope
from mailwright.edge.localsmtp import ConnectionLostError, LocalSmtpClient, Result

OK, DATAERR, NOUSER, UNAVAILABLE, TEMPFAIL, NOPERM = 0, 65, 67, 69, 75, 77
CONNECT_TIMEOUT = 10.0


class Outcome:
    """The exit code, the lines for stderr, and where the message went."""

    __slots__ = ("code", "errors", "queue_id", "via")

    def __init__(self, code: int = OK, via: str = "", queue_id: str | None = None) -> None:
        self.code = code
        self.via = via  # "socket", "maildrop", or "" when nothing was queued
        self.queue_id = queue_id  # queue id, or the maildrop file name
        self.errors: list[str] = []


def connect(path: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket | None:
    """A connection to the daemon's local socket, or None when no daemon listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def submit(
    message: bytes,
    envelope: SubmissionEnvelope,
    config: SubmitConfig,
    log: Callable[[str], None] | None = None,
) -> Outcome:
    unsafe = unsafe_addresses(envelope)
    if unsafe is not None:
        return unsafe
    sock = connect(config.socket_path)
    result: Result | None = None
    if sock is not None:
        try:
            result = LocalSmtpClient(sock, log=log).submit(envelope, [message], len(message))
        except ConnectionLostError as exc:
            if log:
                log(f"connection to the daemon lost ({exc}); using the maildrop")
        finally:
            sock.close()
    if result is None:
        return to_maildrop(message, envelope, config, Outcome())
    return judge(result, message, envelope, config)


def unsafe_addresses(envelope: SubmissionEnvelope) -> Outcome | None:
    """Addresses with control characters never reach a command line (CRLF injection)."""
    bad = [a for a in (envelope.sender, *(r.address for r in envelope.recipients)) if _unsafe(a)]
    if not bad:
        return None
    outcome = Outcome(DATAERR if _unsafe(envelope.sender) else NOUSER)
    outcome.errors = [f"{a!r}: invalid address: control character" for a in bad]
    return outcome


def _unsafe(address: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in address)


def judge(
    result: Result, message: bytes, envelope: SubmissionEnvelope, config: SubmitConfig
) -> Outcome:
    outcome = Outcome()
    temporary = [r for r, reply in result.refused if reply.transient]
    for rcpt, reply in result.refused:
        if not reply.transient:
            outcome.errors.append(f"<{rcpt.address}>: {reply}")
    if result.final is not None and result.final.positive:
        outcome.via, outcome.queue_id = "socket", result.queue_id
        if temporary:
            return to_maildrop(message, envelope.with_recipients(temporary), config, outcome)
        return outcome
    assert result.failure is not None
    stage, reply = result.failure
    if stage == "rcpt":
        if temporary:
            return to_maildrop(message, envelope.with_recipients(temporary), config, outcome)
        outcome.code = _recipients_code([reply for _, reply in result.refused])
        return outcome
    if reply.transient or reply.code < 400:
        retry = result.accepted + temporary if stage in ("data", "end of data") else []
        again = envelope.with_recipients(retry) if retry else envelope
        return to_maildrop(message, again, config, outcome)
    outcome.errors.append(f"{_stage_text(stage)}: {reply}")
    outcome.code = _refusal_code(stage, reply)
    return outcome


def _stage_text(stage: str) -> str:
    return {
        "connect": "the daemon refused local submission",
        "ehlo": "the daemon refused local submission",
        "mail": "sender refused",
        "data": "message refused",
        "end of data": "message refused",
    }.get(stage, stage)


def _recipients_code(replies: list[Reply]) -> int:
    if replies and all((r.status or "").startswith("5.1.") for r in replies):
        return NOUSER
    if any((r.status or "").startswith("5.7.") for r in replies):
        return NOPERM
    return UNAVAILABLE


def _refusal_code(stage: str, reply: Reply) -> int:
    if (reply.status or "").startswith("5.7."):
        return NOPERM
    if stage in ("mail", "end of data"):
        return DATAERR
    return UNAVAILABLE


# ---- the maildrop -------------------------------------------------------------------------
def to_maildrop(
    message: bytes, envelope: SubmissionEnvelope, config: SubmitConfig, outcome: Outcome
) -> Outcome:
    """Check what the daemon would check about addresses, then write the file."""
    from mailwright.queue import maildrop

    problem = check_sender(envelope)
    if problem:
        outcome.errors.append(problem)
        outcome.code = DATAERR
        return outcome
    valid = []
    for rcpt in envelope.recipients:
        reason = address_problem(rcpt.address, envelope.smtputf8)
        if reason:
            outcome.errors.append(f"<{rcpt.address}>: invalid address: {reason}")
        else:
            valid.append(rcpt)
    if not valid:
        outcome.code = NOUSER
        return outcome
    if config.max_message_size and len(message) > config.max_message_size:
        outcome.errors.append(
            f"message refused: larger than the limit of {config.max_message_size} octets"
        )
        outcome.code = DATAERR
        return outcome
    try:
        path = maildrop.write(config.maildrop_dir, envelope.with_recipients(valid), message)
    except OSError as exc:
        outcome.errors.append(
            f"cannot queue the message: the daemon is unavailable and the maildrop "
            f"{config.maildrop_dir} cannot be written ({exc.strerror or exc})"
        )
        outcome.code = TEMPFAIL
        return outcome
    wake(config.socket_path)
    if not outcome.via:
        outcome.via, outcome.queue_id = "maildrop", path.rsplit("/", 1)[-1]
    return outcome


def check_sender(envelope: SubmissionEnvelope) -> str | None:
    if not envelope.sender:
        return None
    reason = address_problem(envelope.sender, envelope.smtputf8)
    return f"<{envelope.sender}>: invalid sender address: {reason}" if reason else None


def address_problem(address: str, utf8: bool) -> str | None:
    """Why ``address`` would be refused in RCPT/MAIL, or None (the daemon's own parser)."""
    from mailwright.core.address import AddressError, parse_path

    try:
        parse_path(f"<{address}>", utf8=utf8)
    except AddressError as exc:
        return str(exc)
    return None


def wake(socket_path: str) -> None:
    """A daemon that is up looks at the maildrop after any local connection: knock once."""
    sock = connect(socket_path, timeout=2.0)
    if sock is None:
        return
    try:
        sock.recv(512)
        sock.sendall(b"QUIT\r\n")
        sock.recv(512)
    except OSError:
        pass
    finally:
        sock.close()


def recipients_of(addresses: list[str], notify: str | None) -> list[Rcpt]:
    return [Rcpt(a, notify) for a in addresses]
