"""Content rules in Postfix regexp-table style (header_checks, body_checks): parsing and matching.

A rules file holds one rule per line, ``/regex/flags ACTION optional text``;
``#`` starts a comment line, blank lines are skipped and a line starting with
white space continues the previous rule (as in Postfix). ``!/regex/`` matches
the lines the regex does *not* match. Matching is case-insensitive by default
and the flag ``i`` toggles that (Postfix's rule: ``/x/i`` is case-sensitive).
Regexes are Python ``re`` syntax (close to PCRE), searched anywhere in a line.
The first matching rule wins. A bad line is a ``RuleError`` naming ``file:line``.

``BodyLines`` is sans-I/O: it cuts a body stream, fed in chunks of any size,
into lines without their CRLF, looks only at the first ``size_limit`` octets
and splits lines longer than ``LINE_LIMIT`` into pieces (as Postfix's
line_length_limit does), so a regex never runs over more than 8 KiB of body.
Trusts nothing in the lines it matches; reads only the file it is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mailwright.core.headers import Header

LINE_LIMIT = 8192  # body lines are matched in pieces of at most this many octets

ACTIONS = frozenset(
    {"REJECT", "DEFER", "DISCARD", "HOLD", "WARN", "IGNORE", "REPLACE", "PREPEND", "OK", "DUNNO"}
)
HEADER_ONLY = frozenset({"IGNORE", "REPLACE", "PREPEND"})  # they edit the header section
NEEDS_TEXT = frozenset({"REPLACE", "PREPEND"})
NO_TEXT = frozenset({"IGNORE", "OK", "DUNNO"})
PASS = frozenset({"OK", "DUNNO"})  # no action: the next line is inspected

_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
_STATUS = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")
_FLAGS_AND_REST = re.compile(r"(\S*)\s*(.*)", re.DOTALL)


class RuleError(ValueError):
    """A rules file that cannot be used; the message starts with ``file:line:``."""


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: re.Pattern[str]
    negated: bool
    action: str  # upper case, one of ACTIONS
    text: str  # what follows the action ("" when none)
    where: str  # file:line, for the log and error messages

    def matches(self, line: str) -> bool:
        return (self.pattern.search(line) is None) == self.negated

    def status(self, default: str) -> tuple[str, str]:
        """(enhanced status code, text) of a REJECT or DEFER: the text may start with its own."""
        found = _STATUS.match(self.text)
        if found is None:
            return default, self.text
        return found[1], self.text[found.end() :]

    def header(self) -> Header:
        """The header field a REPLACE or PREPEND rule writes (checked when parsed)."""
        name, _, value = self.text.partition(":")
        return Header(name, value.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class RuleTable:
    source: str
    rules: tuple[Rule, ...]

    def first(self, line: str) -> Rule | None:
        """The first rule matching ``line``, or None."""
        return next((rule for rule in self.rules if rule.matches(line)), None)


def load(path: str | Path, *, body: bool) -> RuleTable:
    """Read and parse a rules file; ``RuleError`` when it cannot be read or has a bad line."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RuleError(f"cannot read rules file {path}: {exc.strerror or exc}") from None
    return parse(text, str(path), body=body)


def parse(text: str, source: str, *, body: bool) -> RuleTable:
    """The rules in ``text`` (read from ``source``); body tables refuse header-only actions."""
    rules: list[Rule] = []
    for number, logical in _logical_lines(text):
        rules.append(parse_rule(logical, f"{source}:{number}", body=body))
    return RuleTable(source, tuple(rules))


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each rule, continuation lines joined with one space."""
    out: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + stripped)
        else:
            out.append((number, stripped))
    return out


def parse_rule(line: str, where: str, *, body: bool) -> Rule:
    negated = line.startswith("!")
    rest = line[1:] if negated else line
    if not rest.startswith("/"):
        if rest.split(None, 1)[0].lower() in ("if", "endif"):
            raise RuleError(f"{where}: if/endif blocks are not supported")
        raise RuleError(f"{where}: expected /regex/ ACTION, got {line[:40]!r}")
    end = _closing_slash(rest)
    if end < 0:
        raise RuleError(f"{where}: the regex has no closing /")
    source, after = rest[1:end], rest[end + 1 :]
    split = _FLAGS_AND_REST.match(after)
    assert split is not None  # the pattern matches any string
    flags_text, tail = split.groups()
    flags = re.IGNORECASE
    for flag in flags_text:
        if flag != "i":
            raise RuleError(f"{where}: unknown flag {flag!r} after the regex (only i)")
        flags ^= re.IGNORECASE
    try:
        pattern = re.compile(source, flags)
    except re.error as exc:
        raise RuleError(f"{where}: bad regex /{source}/: {exc}") from None
    word, text = [*tail.split(None, 1), "", ""][:2]
    action, text = word.upper(), text.strip()
    _check_action(action, text, where, body=body)
    return Rule(pattern, negated, action, text, where)


def _closing_slash(rest: str) -> int:
    i = 1
    while i < len(rest):
        if rest[i] == "\\":
            i += 2
            continue
        if rest[i] == "/":
            return i
        i += 1
    return -1


def _check_action(action: str, text: str, where: str, *, body: bool) -> None:
    if not action:
        raise RuleError(f"{where}: no action after the regex")
    if action not in ACTIONS:
        known = ", ".join(sorted(ACTIONS))
        raise RuleError(f"{where}: unknown action {action!r} (known: {known})")
    if body and action in HEADER_ONLY:
        raise RuleError(f"{where}: {action} works in header_checks only, not in body_checks")
    if action in NO_TEXT and text:
        raise RuleError(f"{where}: {action} takes no text")
    if action in NEEDS_TEXT:
        name, colon, _ = text.partition(":")
        if not colon or not _FIELD_NAME.match(name):
            raise RuleError(f"{where}: {action} needs a header line 'Name: value'")
    status = _STATUS.match(text)
    wanted = {"REJECT": "5", "DEFER": "4"}.get(action)
    if status is not None and wanted is not None and status[1][0] != wanted:
        raise RuleError(f"{where}: {action} needs a {wanted}.x.x status code, not {status[1]}")
    if "\r" in text or "\n" in text:
        raise RuleError(f"{where}: the text must be one line")


def header_line(header: Header) -> str:
    """``Name: value`` as header rules see it: unfolded (CRLF removed, white space kept)."""
    value = header.value.decode("utf-8", "replace").replace("\r\n", "")
    return f"{header.name}:{value}"


def pieces(line: bytes) -> list[bytes]:
    """A body line as matched: itself, or pieces of ``LINE_LIMIT`` octets when longer."""
    if not line:
        return [b""]
    return [line[i : i + LINE_LIMIT] for i in range(0, len(line), LINE_LIMIT)]


class BodyLines:
    """Cuts a body stream into lines (pieces) to match, within the first ``size_limit`` octets.

    The result does not depend on how the stream is chunked: lines end at LF, one
    CR before it is dropped, and a line is emitted in ``LINE_LIMIT`` pieces as soon
    as it is known to be longer, so at most ``LINE_LIMIT + 1`` octets are buffered.
    """

    def __init__(self, size_limit: int) -> None:
        self.size_limit = size_limit
        self.seen = 0
        self._buf = bytearray()

    @property
    def full(self) -> bool:
        return self.seen >= self.size_limit

    def feed(self, data: bytes) -> list[bytes]:
        data = data[: max(0, self.size_limit - self.seen)]
        self.seen += len(data)
        self._buf += data
        out: list[bytes] = []
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                out += pieces(line.removesuffix(b"\r"))
            elif len(self._buf) >= LINE_LIMIT + 2:  # longer than LINE_LIMIT, even without a CR
                out.append(bytes(self._buf[:LINE_LIMIT]))
                del self._buf[:LINE_LIMIT]
            else:
                return out

    def finish(self) -> list[bytes]:
        """The last line when the stream (or the size limit) ended inside it."""
        if not self._buf:
            return []
        line = bytes(self._buf).removesuffix(b"\r")
        self._buf.clear()
        return pieces(line)
