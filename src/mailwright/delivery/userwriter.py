"""The child process that writes messages where a user, not root, must be the writer.

Started as root by ``delivery.writerpool`` (the daemon's, or the privileged helper's,
pool of long-lived writers); its first act is to become the given uid, gid and groups
for good, before it opens anything. Two modes:

``serve`` (the pool's): one request after another on stdin, one reply line each on
stdout, until stdin ends. A request is

    a header line: a JSON list, the request's words (below)
    the content: frames ``<length>\\n<length octets>``, ended by ``0\\n``; ``abort\\n``
    instead ends it unfinished (the daemon could not read the message to its end),
    so nothing is delivered (a Maildir's file in tmp/ is removed, an mbox truncated)

and the reply is ``OK`` or ``CODE D.S.N text``. A request that fails early (a lock
timeout, a Maildir that cannot be made) still reads its content to the end frame
first, so the next request starts on a frame boundary. A broken frame ends the writer.

A single request (the command-line mode): the words are the arguments, the message
(unframed) comes on stdin, exit 0 when delivered, else the ``CODE D.S.N text`` line on
stderr and exit 75 (temporary) or 73 (permanent).

The request words (the message already formatted: From_ line and quoting for mbox,
plain LF text for a Maildir):

    mbox PATH [--no-dotlock-required] [--refuse-executable] [--denied-is-permanent]
              [--size-limit N]
              [--lock-timeout S] [--stale-lock-age S]       append with delivery.mbox
    maildir DIR [--clean-tmp]                               deliver with delivery.maildir
                                                            (and remove old files in tmp/)

SIGTERM (the daemon shutting down) ends a wait for the mailbox's locks (4.2.0); a
write that has begun is finished; a serving writer then exits after its reply.

Trusts its arguments and its stdin (only its parent, root, holds the other end). Never
regains root. Reads no settings.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mailwright.core.reply import Reply
from mailwright.delivery import maildir, mbox
from mailwright.delivery.privileged import drop_to

TEMPFAIL, CANTCREAT = 75, 73
MAX_FRAME = 1 << 16  # octets of content in one frame (the parent never sends more)


class RequestError(Exception):
    """A request this writer cannot parse (a bug in the parent)."""


class AbortedError(Exception):
    """The parent ended the content with ``abort``: the message is not whole."""


class BrokenStreamError(Exception):
    """The request stream is not framed as it must be, or ended inside a request."""


def _stdin() -> Iterator[bytes]:
    while chunk := sys.stdin.buffer.read(1 << 16):
        yield chunk


def _request_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailwright.delivery.userwriter", exit_on_error=False)
    sub = parser.add_subparsers(dest="kind", required=True)
    box = sub.add_parser("mbox", exit_on_error=False)
    box.add_argument("path")
    box.add_argument("--no-dotlock-required", action="store_true")
    box.add_argument("--refuse-executable", action="store_true")
    box.add_argument("--denied-is-permanent", action="store_true")
    box.add_argument("--size-limit", type=int, default=0)
    box.add_argument("--lock-timeout", type=float, default=60.0)
    box.add_argument("--stale-lock-age", type=float, default=300.0)
    directory = sub.add_parser("maildir", exit_on_error=False)
    directory.add_argument("path")
    directory.add_argument("--clean-tmp", action="store_true")
    return parser


def _identity_arguments(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="mailwright.delivery.userwriter")
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--groups", default="")
    parser.add_argument("request", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if not args.request:
        parser.error("a request (serve, mbox ... or maildir ...) is required")
    return args, list(args.request)


def parse_request(words: list[str]) -> argparse.Namespace:
    try:
        return _request_parser().parse_args(words)
    except (argparse.ArgumentError, SystemExit) as exc:  # SystemExit: a missing argument
        raise RequestError(f"bad request {words!r}: {exc}") from None


def deliver(request: argparse.Namespace, pieces: Iterator[bytes], stop: threading.Event) -> None:
    """Do one request; raises ``mbox.MailboxError`` or ``OSError`` when it failed."""
    if request.kind == "maildir":
        maildir.deliver(Path(request.path), pieces, clean_tmp=request.clean_tmp)
        return
    options = mbox.MboxOptions(
        lock_timeout=request.lock_timeout,
        stale_lock_age=request.stale_lock_age,
        dotlock_required=not request.no_dotlock_required,
        size_limit=request.size_limit,
        refuse_executable=request.refuse_executable,
        denied_is_permanent=request.denied_is_permanent,
    )
    mbox.append(Path(request.path), pieces, options, stop)


def _attempt(request: argparse.Namespace, pieces: Iterator[bytes], stop: threading.Event) -> Reply:
    """``deliver``, its failure as a reply (``OK`` as 250)."""
    try:
        deliver(request, pieces, stop)
    except mbox.MailboxError as exc:
        return exc.reply
    except OSError as exc:
        return mbox.os_error_reply(exc, Path(request.path))
    return Reply.of(250, "2.0.0", "OK")


# ---- serve: one request after another ---------------------------------------------------------


class _Content:
    """The frames of one request's content, read as they are needed."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.ended = False  # the end (or abort) frame has been read

    def __iter__(self) -> Iterator[bytes]:
        while not self.ended:
            head = self.stream.readline(32)
            if head == b"abort\n":
                self.ended = True
                raise AbortedError
            try:
                size = int(head.decode("ascii")) if head.endswith(b"\n") else -1
            except (UnicodeDecodeError, ValueError):
                size = -1
            if not 0 <= size <= MAX_FRAME:
                raise BrokenStreamError(f"bad frame header {head[:32]!r}")
            if size == 0:
                self.ended = True
                return
            data = self.stream.read(size)
            if len(data) != size:
                raise BrokenStreamError("the content ended inside a frame")
            yield data

    def drain(self) -> bool:
        """Read what the delivery left unread, up to the end frame; False on abort."""
        try:
            for _ in self:
                pass
        except AbortedError:
            return False
        return True


def _reply_line(reply: Reply) -> bytes:
    if reply.code == 250:
        return b"OK\n"
    text = " ".join(reply.text.split())  # one line, whatever an error message held
    return f"{reply.code} {reply.status} {text}\n".encode("utf-8", "replace")


def serve_one(
    header: bytes, stream: BinaryIO, stop: threading.Event, refusal: Reply | None = None
) -> Reply:
    """One request of the ``serve`` loop: its reply (after its content was read whole)."""
    content = _Content(stream)
    reply = refusal
    if reply is None:
        try:
            words = json.loads(header)
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise RequestError(f"bad request header {header[:80]!r}")
            reply = _attempt(parse_request(words), iter(content), stop)
        except AbortedError:
            reply = Reply.of(451, "4.3.0", "Message not read to its end; not delivered")
        except (RequestError, ValueError) as exc:
            reply = Reply.of(451, "4.3.0", f"Local delivery helper: {exc}")
        except BrokenStreamError:
            raise  # no way to find the next request: the writer ends
        except Exception as exc:  # a bug: this delivery fails, the writer goes on
            reply = Reply.of(451, "4.3.0", f"Local delivery helper failed: {exc!r}")
    if not content.drain():
        reply = Reply.of(451, "4.3.0", "Message not read to its end; not delivered")
    return reply


def serve(stop: threading.Event, refusal: Reply | None = None) -> int:
    """Answer requests until stdin ends (or SIGTERM came, or ``refusal``: each one refused)."""
    stream, out = sys.stdin.buffer, sys.stdout.buffer
    while header := stream.readline():
        try:
            reply = serve_one(header, stream, stop, refusal)
        except BrokenStreamError:
            return TEMPFAIL  # the parent sees the writer gone: 4xx for this delivery
        out.write(_reply_line(reply))
        out.flush()
        if stop.is_set() or refusal is not None:
            return 0  # shutting down: a new writer is started if mail still comes
    return 0


def main(argv: list[str] | None = None) -> int:
    args, words = _identity_arguments(sys.argv[1:] if argv is None else argv)
    groups = [int(g) for g in args.groups.split(",") if g]
    refusal: Reply | None = None
    try:
        drop_to(args.uid, args.gid, groups or [args.gid])
    except OSError as exc:
        refusal = Reply.of(451, "4.3.0", f"cannot change to uid {args.uid}: {exc}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    if words == ["serve"]:
        return serve(stop, refusal)
    if refusal is not None:
        return _fail(refusal)
    try:
        request = parse_request(words)
    except RequestError as exc:
        return _fail(Reply.of(451, "4.3.0", str(exc)))
    reply = _attempt(request, _stdin(), stop)
    return 0 if reply.code == 250 else _fail(reply)


def _fail(reply: Reply) -> int:
    sys.stderr.write(f"{reply.code} {reply.status} {reply.text}\n")
    return CANTCREAT if reply.permanent else TEMPFAIL


if __name__ == "__main__":
    sys.exit(main())
