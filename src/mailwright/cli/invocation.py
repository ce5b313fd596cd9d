"""The Sendmail command line, parsed: which mode, which envelope, which options.

Follows Sendmail's getopt rules (``sendmail.8``, op Appendix A): single-letter flags may be
clustered (``-ti``); a flag's argument may be attached (``-FCronDaemon``) or the next word
(``-f root``); ``-q`` and ``-Q`` take only an attached argument; option parsing stops at
``--`` or at the first word that is not a flag. Unknown ``-o``/``-O`` options and legacy
flags are accepted and ignored (cron and PHP pass them), but a letter Sendmail does not
know, or a malformed value, is a ``UsageError`` (exit 64), as with Sendmail.

Pure: no I/O, standard library only (this runs on every ``sendmail`` call).
"""

from __future__ import annotations

import os

# letters Sendmail knows, and which of them take a value (op Appendix A)
_WITH_VALUE = frozenset("ABbCDdeFfhLMNOopRrVX")
_ATTACHED_ONLY = frozenset("qQ")  # -q, -q30m, -qR...; -Q, -Qreason
_FLAGS = frozenset("cGIimnsTtUv")

MODES = {
    "m": "deliver",  # read a message, queue it (the default)
    "s": "smtp",  # SMTP on stdin/stdout
    "d": "daemon",  # run the daemon (in the background)
    "D": "daemon-foreground",
    "p": "print-queue",  # mailq
    "P": "print-queue-count",
    "i": "rebuild-aliases",  # newaliases
    "v": "verify",  # check addresses, deliver nothing
    "V": "version",  # Exim's -bV; cheap and handy for scripts
}
UNSUPPORTED_MODES = {  # the whole message: what is not supported, and what to use instead
    "a": "ARPANET mode (-ba) is not supported",
    "h": "the host status cache (-bh) is not supported",
    "H": "purging the host status cache (-bH) is not supported",
    "t": "the address test shell (-bt) is not supported; use -bv ADDRESS to see how an "
    "address resolves, or mailwright address test",
}
# program names that select a mode, like Sendmail's argv[0] switch
PROGRAM_MODES = {"mailq": "p", "newaliases": "i", "smtpd": "d"}

ERROR_MODES = frozenset("epmqw")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NOTIFY = frozenset({"success", "failure", "delay"})


class UsageError(Exception):
    """A command-line problem: print it and exit 64 (EX_USAGE)."""


class UnsupportedError(Exception):
    """A real Sendmail mode that Mailwright does not offer: exit 69 (EX_UNAVAILABLE)."""


class QueueRun:
    """``-q[interval]`` and its ``-qI/-qR/-qS`` substring selections."""

    __slots__ = ("id_contains", "interval", "recipient", "sender")

    def __init__(self) -> None:
        self.interval: float | None = None  # seconds; None = one run now
        self.id_contains: str | None = None
        self.recipient: str | None = None
        self.sender: str | None = None


class Invocation:
    """Everything the command line asked for; defaults are Sendmail's."""

    __slots__ = (
        "body_type",
        "config",
        "delivery_mode",
        "envid",
        "error_mode",
        "extract_recipients",
        "full_name",
        "hop_count",
        "ignore_dots",
        "mode",
        "notify",
        "program",
        "queue_run",
        "recipients",
        "ret",
        "sender",
        "smtputf8",
        "verbose",
    )

    def __init__(self, program: str = "sendmail") -> None:
        self.program = program
        self.mode = "m"
        self.recipients: list[str] = []
        self.extract_recipients = False  # -t
        self.ignore_dots = False  # -i, -oi, -O IgnoreDots
        self.sender: str | None = None  # -f / -r; "" is the null sender
        self.full_name: str | None = None  # -F
        self.notify: str | None = None  # -N, as RCPT NOTIFY= wants it
        self.ret: str | None = None  # -R: FULL or HDRS
        self.envid: str | None = None  # -V
        self.body_type: str | None = None  # -B: 7BIT or 8BITMIME
        self.smtputf8 = False  # -U
        self.hop_count = 0  # -h
        self.config: str | None = None  # -C
        self.verbose = False  # -v
        self.error_mode = "p"  # -oe?: p print (default), q quiet, m/e mail back, w as print
        self.queue_run: QueueRun | None = None  # -q...
        self.delivery_mode = "b"  # -od?, -O DeliveryMode: b background, q queue, i interactive

    @property
    def mode_name(self) -> str:
        return MODES[self.mode]


def program_name(argv0: str) -> str:
    """``/usr/sbin/sendmail`` -> ``sendmail``; ``.../cli/sendmail.py`` (python -m) too."""
    name = os.path.basename(argv0)
    return name[:-3] if name.endswith(".py") else name


def parse(argv: list[str]) -> Invocation:
    """Parse ``argv`` (``argv[0]`` is the program name, which may select the mode)."""
    inv = Invocation(program_name(argv[0]) if argv else "sendmail")
    inv.mode = PROGRAM_MODES.get(inv.program, "m")
    args = argv[1:]
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            break
        if word == "--version":  # the GNU habit; the same as -bV
            inv.mode = "V"
            continue
        if not word.startswith("-") or word == "-":
            i -= 1
            break
        i = _cluster(inv, word[1:], args, i)
    inv.recipients = args[i:]
    return inv


def _cluster(inv: Invocation, letters: str, args: list[str], i: int) -> int:
    """Apply one ``-xyz`` word; returns the index of the next unread word."""
    pos = 0
    while pos < len(letters):
        letter = letters[pos]
        rest = letters[pos + 1 :]
        if letter in _FLAGS:
            _flag(inv, letter)
            pos += 1
            continue
        if letter in _ATTACHED_ONLY:
            _value(inv, letter, rest)
            return i
        if letter in _WITH_VALUE:
            if rest:
                value = rest
            elif i < len(args):
                value = args[i]
                i += 1
            else:
                raise UsageError(f"option requires an argument -- '{letter}'")
            _value(inv, letter, value)
            return i
        raise UsageError(f"invalid option -- '{letter}'")
    return i


def _flag(inv: Invocation, letter: str) -> None:
    if letter == "t":
        inv.extract_recipients = True
    elif letter == "i":
        inv.ignore_dots = True
    elif letter == "v":
        inv.verbose = True
    elif letter == "U":
        inv.smtputf8 = True
    elif letter == "I":
        inv.mode = "i"  # historical: initialise the alias database
    # c G m n s T: legacy flags with no meaning here (accepted, ignored)


def _value(inv: Invocation, letter: str, value: str) -> None:
    if letter == "b":
        _mode(inv, value)
    elif letter in "fr":
        inv.sender = _sender(value)
    elif letter == "F":
        inv.full_name = value
    elif letter == "N":
        inv.notify = _notify(value)
    elif letter == "R":
        inv.ret = _choice(value, ("FULL", "HDRS"), "-R wants full or hdrs")
    elif letter == "V":
        if not value or not value.isprintable() or len(value) > 100:
            raise UsageError("-V wants an envelope id of at most 100 printable characters")
        inv.envid = value
    elif letter == "B":
        inv.body_type = _choice(value, ("7BIT", "8BITMIME"), "-B wants 7BIT or 8BITMIME")
    elif letter == "h":
        if not value.isdigit():
            raise UsageError(f"-h wants a hop count, not {value!r}")
        inv.hop_count = int(value)
    elif letter == "C":
        inv.config = value
    elif letter == "o":
        _short_option(inv, value)
    elif letter == "O":
        _long_option(inv, value)
    elif letter == "q":
        _queue(inv, value)
    elif letter == "e":
        _error_mode(inv, value)
    # A (c/m), D, d, L, M, p, Q, X: accepted and ignored (debugging, syslog tag, ...)


def _mode(inv: Invocation, value: str) -> None:
    if value in MODES and len(value) == 1:
        inv.mode = value
        return
    if value in UNSUPPORTED_MODES:
        raise UnsupportedError(UNSUPPORTED_MODES[value])
    raise UsageError(f"invalid operation mode {value!r}")


def _sender(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value


def _notify(value: str) -> str:
    words = [w.strip().lower() for w in value.split(",")]
    if words == ["never"]:
        return "NEVER"
    if not words or any(w not in _NOTIFY for w in words) or len(set(words)) != len(words):
        raise UsageError("-N wants never, or a list of success, failure, delay")
    return ",".join(w.upper() for w in words)


def _choice(value: str, allowed: tuple[str, ...], message: str) -> str:
    upper = value.upper()
    if upper not in allowed:
        raise UsageError(message)
    return upper


def _short_option(inv: Invocation, value: str) -> None:
    """``-oX...``: Sendmail's one-letter options. Known ones honoured, others ignored."""
    if not value:
        raise UsageError("-o wants an option letter")
    letter, arg = value[0], value[1:]
    if letter == "i":
        inv.ignore_dots = _truth(arg)
    elif letter == "e":
        _error_mode(inv, arg)
    elif letter == "d":
        _delivery_mode(inv, arg)
    # -om, -oL, -oQ ...: ignored


def _long_option(inv: Invocation, value: str) -> None:
    """``-O Name=value``: the long option names. Known ones honoured, others ignored."""
    name, _, arg = value.partition("=")
    name = name.strip().lower()
    if name == "ignoredots":
        inv.ignore_dots = _truth(arg)
    elif name == "errormode" and arg:
        _error_mode(inv, arg)
    elif name == "deliverymode":
        _delivery_mode(inv, arg)


def _truth(arg: str) -> bool:
    return arg.strip().lower() not in ("f", "false", "n", "no", "0")


def _delivery_mode(inv: Invocation, arg: str) -> None:
    """Sendmail's delivery modes by first letter: ``d`` (deferred) queues like ``q``;
    an unknown one is ignored, like an unknown option."""
    mode = arg.strip()[:1].lower()
    if mode in ("b", "i", "q"):
        inv.delivery_mode = mode
    elif mode == "d":
        inv.delivery_mode = "q"


def _error_mode(inv: Invocation, arg: str) -> None:
    mode = arg[:1].lower()
    if mode in ERROR_MODES:
        inv.error_mode = mode


def _queue(inv: Invocation, value: str) -> None:
    run = inv.queue_run or QueueRun()
    inv.queue_run = run
    if not value:
        return
    head = value[0]
    if head.isdigit():
        run.interval = parse_interval(value)
        return
    if head in "fG":  # foreground run / queue group: there is one queue, run it
        return
    if head == "p":  # persistent runner: an interval
        run.interval = parse_interval(value[1:]) if value[1:] else 60 * 60.0
        return
    if head == "!":
        raise UsageError("negated queue selections (-q!X) are not supported")
    text = value[1:]
    if head in "IRS" and not text:
        raise UsageError(f"-q{head} wants a substring to match")
    if head == "I":
        run.id_contains = text
    elif head == "R":
        run.recipient = text
    elif head == "S":
        run.sender = text
    elif head == "Q":
        raise UsageError("quarantine selection (-qQ) is not supported; see mailwright queue")
    else:
        raise UsageError(f"invalid queue option -q{value}")


def parse_interval(text: str) -> float:
    """Sendmail's ``-q`` time: ``30m``, ``1h30m``, ``90`` (a bare number is minutes)."""
    total, number = 0.0, ""
    for ch in text.lower():
        if ch.isdigit():
            number += ch
        elif ch in _UNITS and number:
            total += int(number) * _UNITS[ch]
            number = ""
        else:
            raise UsageError(f"invalid queue interval {text!r} (e.g. 30m, 1h, 15s)")
    if number:
        total += int(number) * 60
    if total <= 0:
        raise UsageError(f"invalid queue interval {text!r}")
    return total
