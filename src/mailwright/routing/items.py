"""The right-hand side of an alias, a ``.forward`` line or an ``:include:`` file, parsed.

aliases(5) items, separated by commas (or new lines in ``.forward`` and include
files):

    user, user@remote.example       an address (a local name is aliased further)
    \\user                           deliver to the local user, no further aliasing
    "|/usr/bin/prog -x"              a program (quoted when it has spaces)
    /var/log/list.mbox               append to a file, mbox format
    :include:/etc/mail/list.members  more items from a file

Double quotes protect commas and spaces (``\\"`` and ``\\\\`` escape inside them);
``<addr>`` and ``Name <addr>`` forms give the address; ``(comments)`` are dropped.
Trusts nothing: every bad item is a problem string (the caller adds file and line)
and the other items are kept. Reads no settings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum

from mailwright.core.address import AddressError, parse_mailbox

_LOCAL_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-\u0080-\U0010ffff]+$")
_INCLUDE = ":include:"
_NEEDS_QUOTES = frozenset(',"()<>')
# C0 controls and DEL: never part of a program or file name (a NUL cannot even be passed
# to exec); a tab is white space and may separate a quoted program's arguments
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class ItemKind(StrEnum):
    ADDRESS = "address"  # a mail address or a local name, resolved further
    USER = "user"  # \user: a local mailbox, never aliased or forwarded
    PROG = "prog"  # |command
    FILE = "file"  # /absolute/path
    INCLUDE = "include"  # :include:/absolute/path


@dataclass(frozen=True, slots=True)
class Item:
    kind: ItemKind
    value: str  # the address, user name, command (without "|"), or path

    def __str__(self) -> str:
        """The item as it is written in an aliases file: it parses back to itself."""
        text = {
            ItemKind.ADDRESS: _printable_address(self.value),
            ItemKind.USER: "\\" + self.value,
            ItemKind.PROG: "|" + self.value,
            ItemKind.FILE: self.value,
            ItemKind.INCLUDE: _INCLUDE + self.value,
        }[self.kind]
        # quoted when unquoted it would split, lose a (comment) or read as a <route>
        if any(c.isspace() or c in _NEEDS_QUOTES for c in text):
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text


def _printable_address(value: str) -> str:
    """An address whose local part starts like a program, file, user or include item
    (``"/var/mail/x"@example.org``) keeps its local part quoted, so it reads back as an
    address."""
    local, at, domain = value.rpartition("@")
    special = local[:1] in ("|", "/", "\\") or local[: len(_INCLUDE)].lower() == _INCLUDE
    if not at or not special or local.startswith('"'):
        return value
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"@' + domain


def parse_items(text: str) -> tuple[list[Item], list[str]]:
    """The items of ``text`` and one problem string per bad item."""
    items: list[Item] = []
    problems: list[str] = []
    for token, quoted, error in _tokens(text):
        if error:
            problems.append(error)
            continue
        try:
            item = _item(token, quoted)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if item is not None:
            items.append(item)
    return items, problems


def dump_items(items: list[Item]) -> str:
    """Compact text for the compiled alias table."""
    return json.dumps([[i.kind.value, i.value] for i in items], separators=(",", ":"))


def load_items(text: str) -> list[Item]:
    return [Item(ItemKind(kind), value) for kind, value in json.loads(text)]


def _tokens(text: str) -> list[tuple[str, bool, str]]:
    """(token, was it entirely one quoted string, problem) per comma/newline-separated part."""
    if '"' not in text and "(" not in text:  # the usual case, without a character loop
        parts = (t.strip() for line in text.split("\n") for t in line.split(","))
        return [(t, False, "") for t in parts if t]
    out: list[tuple[str, bool, str]] = []
    buf: list[str] = []
    quoted_whole = False
    i, n = 0, len(text)

    def flush() -> None:
        token = "".join(buf).strip()
        if token:
            out.append((token, quoted_whole, ""))
        buf.clear()

    while i < n:
        c = text[i]
        if c in ",\n":
            flush()
            quoted_whole = False
        elif c == '"':
            end, value, ok = _quoted(text, i)
            if not ok:
                out.append(("", False, f"unbalanced quote in {text[i:].strip()[:60]!r}"))
                return out
            quoted_whole = not "".join(buf).strip() and _rest_is_empty(text, end)
            buf.append(value if quoted_whole else text[i:end])
            i = end
            continue
        elif c == "(":
            depth, j = 0, i
            while j < n:
                depth += text[j] == "("
                depth -= text[j] == ")"
                j += 1
                if depth == 0:
                    break
            if depth:
                out.append(("", False, f"unbalanced parenthesis in {text[i:].strip()[:60]!r}"))
                return out
            i = j
            continue
        else:
            buf.append(c)
        i += 1
    flush()
    return out


def _quoted(text: str, start: int) -> tuple[int, str, bool]:
    """End index (after the closing quote), unescaped content, found the end?"""
    value: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            value.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return i + 1, "".join(value), True
        if c == "\n":
            break
        value.append(c)
        i += 1
    return i, "", False


def _rest_is_empty(text: str, end: int) -> bool:
    """Nothing but white space until the next separator: the quotes enclosed the item."""
    for c in text[end:]:
        if c in ",\n":
            return True
        if not c.isspace():
            return False
    return True


def _item(token: str, quoted: bool) -> Item | None:
    if "<" in token and not quoted:
        inner = re.search(r"<([^<>]*)>\s*$", token)
        if inner is None:
            raise ValueError(f"{token}... bad address (unbalanced <>)")
        token = inner.group(1).strip()
        if not token:
            return None
    if token[:1] in "|/" and _CONTROL.search(token):
        raise ValueError(f"{token[:60]!r}... a control character in a program or file name")
    if token.startswith("|"):
        return _program(token, quoted)
    if token.startswith("/"):
        if not quoted and any(c.isspace() for c in token):
            raise ValueError(f"{token}... a file name with spaces must be quoted")
        return Item(ItemKind.FILE, token)
    if token[: len(_INCLUDE)].lower() == _INCLUDE:
        path = token[len(_INCLUDE) :].strip()
        if not path.startswith("/"):
            raise ValueError(f"{token}... :include: needs an absolute path")
        return Item(ItemKind.INCLUDE, path)
    if token.startswith("\\"):
        name = token[1:]
        if not _LOCAL_NAME.match(name) or "@" in name:
            raise ValueError(f"{token}... bad local user name")
        return Item(ItemKind.USER, name)
    return Item(ItemKind.ADDRESS, _address(token))


def _program(token: str, quoted: bool) -> Item:
    command = token[1:].strip()
    if not command:
        raise ValueError(f"{token}... empty program")
    if not quoted and any(c.isspace() for c in command):
        raise ValueError(f'{token}... a program with arguments must be quoted: "{token}"')
    return Item(ItemKind.PROG, command)


def _address(token: str) -> str:
    if any(c.isspace() for c in token) and not token.startswith('"'):
        raise ValueError(f"{token}... bad address (white space)")
    if "@" not in token:
        if not _LOCAL_NAME.match(token) or token.startswith(".") or token.endswith("."):
            raise ValueError(f"{token}... bad address")
        return token
    try:
        return str(parse_mailbox(token, utf8=True))
    except AddressError as exc:
        raise ValueError(f"{token}... bad address ({exc})") from None
