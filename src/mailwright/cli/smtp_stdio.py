"""``sendmail -bs``: SMTP on standard input and output, with the daemon's protocol core.

When the daemon runs, stdin and stdout are simply joined to its local socket, so the
dialogue is the daemon's own (the same checks, the caller's uid from the socket's peer
credentials, the same ``Received:`` header). When it does not, the same sans-I/O server
core (``smtp.server.ServerConnection``) runs here, and each accepted message is written
to the maildrop, where the daemon's pickup later applies every other check.

This is a local, trusted channel, used by people and scripts: lines may end in LF or
CRLF (``script_framing`` makes them CRLF before the core sees them), and a scripted batch
of commands is not "improper pipelining" (the local listener, and the core here, run
with ``ServerSettings.strict_pipelining`` off). The dialogue starts only after the
greeting has been read, so a script that writes at once is not an early talker.

Exit status: 0 when the session ended with QUIT, or its input ended between messages;
76 (EX_PROTOCOL) when the input ended in the middle of a transaction (the unfinished
message is dropped) or the session was closed on a protocol error.

Trusts nothing from stdin (the protocol core checks it all). Settings: the
``SubmitConfig`` view (host name, size limit, socket and maildrop paths).
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING

from mailwright.cli.script_framing import ScriptFraming
from mailwright.cli.submit import connect, wake
from mailwright.config.lite import SubmitConfig
from mailwright.core.submission import Rcpt, SubmissionEnvelope

if TYPE_CHECKING:  # imported where used: the relay path needs none of them
    from mailwright.core.reply import Reply
    from mailwright.smtp import events as ev

_CHUNK = 65536
OK, PROTOCOL = 0, 76
_NOTIFY_ORDER = ("NEVER", "SUCCESS", "FAILURE", "DELAY")


def serve(config: SubmitConfig, in_fd: int = 0, out_fd: int = 1) -> int:
    sock = connect(config.socket_path)
    if sock is not None:
        return relay(sock, in_fd, out_fd)
    return serve_here(config, in_fd, out_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---- through the daemon ---------------------------------------------------------------------
def relay(sock: socket.socket, in_fd: int, out_fd: int) -> int:
    """Copy stdin (framed) to the daemon and its replies to stdout until it closes."""
    sock.settimeout(None)
    framing = ScriptFraming()
    try:
        _write_all(out_fd, _greeting(sock))
    except OSError:
        sock.close()
        return PROTOCOL

    def upstream() -> None:
        try:
            while data := os.read(in_fd, _CHUNK):
                sock.sendall(framing.feed(data))
            sock.sendall(framing.end())
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon went away; the reading side notices

    threading.Thread(target=upstream, daemon=True).start()
    try:
        while data := sock.recv(_CHUNK):
            _write_all(out_fd, data)
    except OSError:
        pass
    finally:
        sock.close()
    return _status(framing)


def _greeting(sock: socket.socket) -> bytes:
    """The daemon's whole greeting (it may span lines), read before any input is sent."""
    data = b""
    while True:
        chunk = sock.recv(_CHUNK)
        if not chunk:
            return data
        data += chunk
        last = data.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
        if data.endswith(b"\n") and last[3:4] != b"-":
            return data


def _status(framing: ScriptFraming) -> int:
    return PROTOCOL if framing.in_transaction and not framing.quit else OK


# ---- without the daemon -----------------------------------------------------------------------
def serve_here(config: SubmitConfig, in_fd: int, out_fd: int) -> int:
    from mailwright.core.reply import Reply
    from mailwright.smtp import events as ev
    from mailwright.smtp.data import BareLinePolicy, DataLimits
    from mailwright.smtp.server import ServerConnection, ServerSettings, State

    conn = ServerConnection(
        ServerSettings(
            hostname=config.hostname,
            data_limits=DataLimits(
                max_size=config.max_message_size,
                max_line=0,  # local mail: the daemon's pickup decides, as for sendmail -bm
                bare_lines=BareLinePolicy.NORMALIZE,
            ),
            strict_pipelining=False,  # a local script's batch of commands
        )
    )
    framing = ScriptFraming()
    conn.greet()
    envelope: SubmissionEnvelope | None = None
    content = bytearray()
    ended = False
    while True:
        event = conn.next_event()
        out = conn.data_to_send()  # replies the core made on its own, then ours
        if out:
            _write_all(out_fd, out)
        if event is None:
            if conn.state is State.CLOSED:
                return OK
            if ended:  # the client went away; an unfinished message is not ours
                return PROTOCOL if conn.in_transaction else OK
            data = os.read(in_fd, _CHUNK)
            if data:
                conn.receive(framing.feed(data))
            else:
                ended = True
                conn.receive(framing.end())
        elif isinstance(event, ev.MailFrom):
            envelope = _envelope(event)
            conn.respond(None)
        elif isinstance(event, ev.RcptTo):
            assert envelope is not None
            envelope.recipients.append(_rcpt(event))
            conn.respond(None)
        elif isinstance(event, ev.DataStart):
            content.clear()
            conn.respond(None)
        elif isinstance(event, ev.Content):
            content += event.data
        elif isinstance(event, ev.ContentEnd):
            assert envelope is not None
            conn.respond(event.problem or _store(config, envelope, bytes(content)))
            envelope = None
            content.clear()
        elif isinstance(event, ev.Reset):
            envelope = None
        elif isinstance(event, ev.Hello):
            conn.respond(None)
        elif isinstance(event, ev.StartTls | ev.Auth):
            conn.respond(Reply.of(454, "4.7.0", "Not available"))
        elif isinstance(event, ev.Closed):
            _write_all(out_fd, conn.data_to_send())
            return OK if event.reason == "QUIT" else PROTOCOL


def _envelope(event: ev.MailFrom) -> SubmissionEnvelope:
    params = event.params
    return SubmissionEnvelope(
        "" if event.sender is None else str(event.sender),
        [],
        ret=params.ret.value if params.ret else None,
        envid=params.envid,
        body_type=params.body.value if params.body.value != "7BIT" else None,
        smtputf8=params.smtputf8,
    )


def _rcpt(event: ev.RcptTo) -> Rcpt:
    r = event.recipient
    notify = ",".join(n for n in _NOTIFY_ORDER if r.notify and n in r.notify) or None
    return Rcpt(str(r.address), notify, r.orcpt)


def _store(config: SubmitConfig, envelope: SubmissionEnvelope, message: bytes) -> Reply:
    from mailwright.core.reply import Reply
    from mailwright.queue import maildrop

    try:
        path = maildrop.write(config.maildrop_dir, envelope, message)
    except OSError:
        return Reply.of(451, "4.3.0", "Local error in processing, try again later")
    wake(config.socket_path)
    name = os.path.basename(path)
    return Reply.of(250, "2.0.0", f"{name} Message accepted for delivery")
