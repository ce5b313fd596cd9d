"""``sendmail``, ``mailq`` and ``newaliases``: the Sendmail-compatible command line.

One entry point; the program name selects the mode as with Sendmail (``mailq`` = ``-bp``,
``newaliases`` = ``-bi``, ``smtpd`` = ``-bd``). The default mode reads a message on stdin
and queues it through the daemon's local socket (the maildrop when the daemon is down),
exiting 0 once it is durably queued and with a ``<sysexits.h>`` code and a one-line
message otherwise: 64 usage, 65 data error, 67 unknown user, 69 unavailable, 75
temporary failure, 78 configuration. Never a traceback.

Start-up speed matters (cron, PHP): the default mode imports the standard library and a
few small project modules only, never pydantic, click or rich; the other modes load what
they need when they run. Trusts: the caller's real uid for its identity (the daemon
checks it again through the socket). Settings: via ``config.lite`` (``-C``,
``$MAILWRIGHT_CONFIG`` or ``/etc/mailwright/mailwright.toml``); the daemon and queue
modes load the full settings.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from mailwright.cli import invocation
from mailwright.cli.invocation import Invocation, UnsupportedError, UsageError
from mailwright.config import lite

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mailwright.cli.draft import Draft

USAGE, DATAERR, UNAVAILABLE, SOFTWARE, OSERR, TEMPFAIL, NOPERM, CONFIG = (
    64,
    65,
    69,
    70,
    71,
    75,
    77,
    78,
)


def say(message: str) -> None:
    """One line on stderr, prefixed like every Mailwright tool."""
    sys.stderr.write(f"mailwright: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv if argv is None else argv
    try:
        return run(invocation.parse(args))
    except UsageError as exc:
        say(f"{exc} (see sendmail(8); e.g. sendmail -t -i < message)")
        return USAGE
    except UnsupportedError as exc:
        say(str(exc))
        return UNAVAILABLE
    except lite.LiteConfigError as exc:
        say(str(exc))
        return CONFIG
    except KeyboardInterrupt:
        say("interrupted; nothing was queued")
        return TEMPFAIL
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except Exception as exc:  # a bug: still one line, never a traceback
        say(f"internal error: {type(exc).__name__}: {exc}")
        return SOFTWARE


def _silence_stdout() -> None:
    # the reader of our output went away (mailq | head): do not complain at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run(inv: Invocation) -> int:
    mode = inv.mode
    if mode == "V":
        from mailwright.cli.version import package_version

        print(f"Mailwright {package_version()} (Sendmail-compatible command line)")
        return 0
    if mode in ("d", "D"):
        from mailwright.cli.daemon_mode import run_daemon_mode

        return run_daemon_mode(inv)
    if mode == "m" and inv.queue_run is not None:
        from mailwright.cli.queue_mode import run_queue

        return run_queue(inv)
    config = lite.load(inv.config)
    if mode == "m":
        return deliver(inv, config)
    if mode == "s":
        from mailwright.cli import smtp_stdio

        return smtp_stdio.serve(config)
    if mode in ("p", "P"):
        from mailwright.cli.queue_mode import print_queue

        return print_queue(config, count_only=mode == "P")
    if mode == "i":  # the same as "mailwright aliases build", exit codes included
        from mailwright.cli.aliases import newaliases

        return newaliases(inv.config)
    if mode == "v":
        from mailwright.cli import verify

        if not inv.recipients:
            raise UsageError("-bv wants at least one address")
        return verify.verify(inv.recipients, config, inv.config)
    raise UsageError(f"invalid operation mode {mode!r}")


# ---- the default mode: read a message, queue it -----------------------------------------------
class Caller:
    """The user running us, from the real uid (never from the environment)."""

    __slots__ = ("full_name", "login", "uid")

    def __init__(self) -> None:
        import pwd

        self.uid = os.getuid()
        try:
            entry = pwd.getpwuid(self.uid)
        except KeyError:
            self.login, self.full_name = f"uid{self.uid}", ""
            return
        from mailwright.core.submission import gecos_name

        self.login = entry.pw_name
        self.full_name = gecos_name(entry.pw_gecos, entry.pw_name)


def deliver(inv: Invocation, config: lite.SubmitConfig) -> int:
    from mailwright.cli import draft as drafting
    from mailwright.cli.submit import recipients_of, submit
    from mailwright.core.submission import SubmissionEnvelope

    caller = Caller()
    argv_rcpts = _unique(
        config.qualify(a) for word in inv.recipients for a in drafting.split_argument(word)
    )
    if not inv.extract_recipients and not argv_rcpts:
        raise UsageError("no recipients given (name them, or use -t to read them from To/Cc/Bcc)")
    try:
        raw = drafting.read_input(sys.stdin.fileno(), inv.ignore_dots, config.max_message_size)
    except drafting.MessageTooBigError:
        problem = f"message refused: larger than the limit of {config.max_message_size} octets"
        return errors_out(inv, config, caller, DATAERR, [problem], None)
    except OSError as exc:
        say(f"cannot read the message from standard input: {exc.strerror or exc}")
        return OSERR
    message = drafting.Draft.parse(raw)
    hops = message.count("Received") + inv.hop_count
    if hops > config.max_hop_count:
        problem = (
            f"message refused: too many hops ({hops}, limit {config.max_hop_count}): mail loop?"
        )
        return errors_out(inv, config, caller, DATAERR, [problem], raw)
    recipients = argv_rcpts
    if inv.extract_recipients:
        excluded = {a.lower() for a in argv_rcpts}  # Sendmail: -t minus the arguments
        header = _unique(config.qualify(a) for a in message.header_recipients())
        recipients = [a for a in header if a.lower() not in excluded]
        message.remove("Bcc")
        if not recipients:
            problem = "no recipient addresses found in the header (To, Cc, Bcc)"
            if not mails_errors(inv):
                raise UsageError(problem)
            return errors_out(inv, config, caller, USAGE, [problem], raw)
    message.qualify_addresses(config.domain)  # Sendmail: "To: alice" leaves as alice@domain
    own = f"{caller.login}@{config.domain}"
    sender = own if inv.sender is None else (config.qualify(inv.sender) if inv.sender else "")
    full_name = caller.full_name if inv.full_name is None else inv.full_name
    message.complete(sender=sender or own, full_name=full_name, hostname=config.hostname)
    _ask_delivery_mode(message, inv.delivery_mode)
    content = message.encode()
    addresses = [sender, *recipients]
    envelope = SubmissionEnvelope(
        sender,
        recipients_of(recipients, inv.notify),
        ret=inv.ret,
        envid=inv.envid,
        body_type=inv.body_type or (None if content.isascii() else "8BITMIME"),
        smtputf8=inv.smtputf8 or not all(a.isascii() for a in addresses),
    )
    outcome = submit(content, envelope, config, log=_transcript if inv.verbose else None)
    if inv.verbose and outcome.via:
        where = "the maildrop" if outcome.via == "maildrop" else "the queue"
        print(f"queued in {where} as {outcome.queue_id}")
    return errors_out(inv, config, caller, outcome.code, outcome.errors, content)


def mails_errors(inv: Invocation) -> bool:
    from mailwright.cli.returned_mail import MAIL_BACK_MODES

    return inv.error_mode in MAIL_BACK_MODES


def errors_out(
    inv: Invocation,
    config: lite.SubmitConfig,
    caller: Caller,
    code: int,
    errors: list[str],
    original: bytes | None,
) -> int:
    """Report ``errors`` by the error mode (-oe): mailed back (exit 0), printed, or not.

    A temporary failure (75) is never mailed: nothing was queued, and the caller is told
    to try again by the exit code, as with every other error mode.
    """
    if not errors:
        return code
    if mails_errors(inv) and code != TEMPFAIL:
        from mailwright.cli.returned_mail import mail_back

        sender = config.qualify(inv.sender) if inv.sender else None
        if mail_back(errors, original, sender=sender, caller=caller.login, config=config):
            return 0
    if inv.error_mode != "q":
        for line in errors:
            say(line)
    return code


def _ask_delivery_mode(message: Draft, mode: str) -> None:
    """``-odq`` / ``-odi``: the field that tells the daemon (``core.deliverymode``); the
    caller's own copy of it never counts, so ``-odb`` stays background."""
    from mailwright.core import deliverymode

    message.remove(deliverymode.FIELD)
    if mode == "q":
        message.add(deliverymode.FIELD, deliverymode.QUEUE)
    elif mode == "i":
        message.add(deliverymode.FIELD, deliverymode.INTERACTIVE)


def _transcript(line: str) -> None:
    print(line, flush=True)


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for address in addresses:
        key = address.lower()
        if key not in seen:
            seen.add(key)
            out.append(address)
    return out


if __name__ == "__main__":
    sys.exit(main())
