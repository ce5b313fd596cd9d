"""The child process that writes a message where a user, not root, must be the writer.

Started by ``delivery.privileged.write_as`` as root; its first act is to become the
given uid, gid and groups for good, before it opens anything. Then it reads the
message (already formatted: From_ line and quoting for mbox, plain LF text for a
Maildir) from stdin and:

    mbox PATH [--no-dotlock-required] [--refuse-executable] [--denied-is-permanent]
              [--size-limit N]
              [--lock-timeout S] [--stale-lock-age S]       append with delivery.mbox
    maildir DIR [--clean-tmp]                               deliver with delivery.maildir
                                                            (and remove old files in tmp/)

SIGTERM (the daemon shutting down) ends a wait for the mailbox's locks (4.2.0); a
write that has begun is finished.

Exit 0 when delivered; otherwise a ``CODE D.S.N text`` line on stderr and exit 75
(temporary) or 73 (permanent). Trusts its arguments (only the daemon starts it).
Reads no settings.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from mailwright.core.reply import Reply
from mailwright.delivery import maildir, mbox
from mailwright.delivery.privileged import drop_to

TEMPFAIL, CANTCREAT = 75, 73


def _stdin() -> Iterator[bytes]:
    while chunk := sys.stdin.buffer.read(1 << 16):
        yield chunk


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mailwright.delivery.userwriter")
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--groups", default="")
    sub = parser.add_subparsers(dest="kind", required=True)
    box = sub.add_parser("mbox")
    box.add_argument("path")
    box.add_argument("--no-dotlock-required", action="store_true")
    box.add_argument("--refuse-executable", action="store_true")
    box.add_argument("--denied-is-permanent", action="store_true")
    box.add_argument("--size-limit", type=int, default=0)
    box.add_argument("--lock-timeout", type=float, default=60.0)
    box.add_argument("--stale-lock-age", type=float, default=300.0)
    directory = sub.add_parser("maildir")
    directory.add_argument("path")
    directory.add_argument("--clean-tmp", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    groups = [int(g) for g in args.groups.split(",") if g]
    try:
        drop_to(args.uid, args.gid, groups or [args.gid])
    except OSError as exc:
        return _fail(Reply.of(451, "4.3.0", f"cannot change to uid {args.uid}: {exc}"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        if args.kind == "maildir":
            maildir.deliver(Path(args.path), _stdin(), clean_tmp=args.clean_tmp)
        else:
            options = mbox.MboxOptions(
                lock_timeout=args.lock_timeout,
                stale_lock_age=args.stale_lock_age,
                dotlock_required=not args.no_dotlock_required,
                size_limit=args.size_limit,
                refuse_executable=args.refuse_executable,
                denied_is_permanent=args.denied_is_permanent,
            )
            mbox.append(Path(args.path), _stdin(), options, stop)
    except mbox.MailboxError as exc:
        return _fail(exc.reply)
    except OSError as exc:
        return _fail(mbox.os_error_reply(exc, Path(args.path)))
    return 0


def _fail(reply: Reply) -> int:
    sys.stderr.write(f"{reply.code} {reply.status} {reply.text}\n")
    return CANTCREAT if reply.permanent else TEMPFAIL


if __name__ == "__main__":
    sys.exit(main())
