"""Outbound address rewriting: Sendmail's masquerading and genericstable, Postfix's
``smtp_generic_maps``.

A host whose users are ``alice@host.lan`` sends to the internet as
``alice@example.com``. The ``AddressRewriter`` is sans-I/O: ``sender`` rewrites
an envelope sender, ``headers`` the addresses in the sender header fields (From,
Sender, Reply-To, Resent-From, Resent-Sender) and, with ``recipient_headers``,
in To, Cc, Resent-To and Resent-Cc. Envelope recipients are never rewritten, nor
the null sender. Per address, the first that applies wins:

1. the generic table, ``local@domain`` key;
2. the generic table, bare ``local`` key, for a local domain only;
3. the generic table, ``@domain`` key;
4. masquerading: a domain listed in ``masquerade_domains`` (``.host.lan`` also
   matches its subdomains) becomes ``masquerade_as``, unless the local part is
   an exception (Sendmail's EXPOSED_USER, ``root`` by default).

A table value is a full address (the address is replaced) or ``@domain`` (the
local part is kept). Local parts match case-insensitively, as Postfix's tables do.

Header values are edited in place: only the characters of each addr-spec are
replaced, so display names, comments, encoded words and folding stay exactly as
they were (the stdlib's ``email`` parsers would re-serialise the whole field). A
field that does not parse as an address list (unbalanced quotes, comments or
angle brackets, text that is not UTF-8) is left as it is, and so is a mailbox
whose address is not a plain ``local@domain`` (a comment inside it, unqualified).

Trusts nothing in the table file: every bad line is a ``TableError`` naming file
and line, and is skipped. Reads the ``[rewrite]`` settings, ``routing.local_domains``
(with the host name) and ``local.domain`` in ``rewriter_from_settings``; the
table is read there and then follows its file (``core.watchedfile``: an edit takes
effect within a second; a file that cannot be read keeps the table in use); a reload
(SIGHUP) reads it afresh.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailwright.core.address import Address, AddressError, parse_domain, parse_mailbox
from mailwright.core.headers import Header, HeaderList
from mailwright.core.watchedfile import WatchedFile
from mailwright.routing.table import TableError, TableLine, keyed_entries, read_table, split_table

if TYPE_CHECKING:
    from mailwright.config.schema import Settings

GENERIC = "generic table"  # what the log lines call it
SENDER_FIELDS = frozenset({"from", "sender", "reply-to", "resent-from", "resent-sender"})
RECIPIENT_FIELDS = frozenset({"to", "cc", "resent-to", "resent-cc"})
DEFAULT_TABLE = Path("/etc/mailwright/generic")


# ---- the generic table --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GenericTable:
    """Normalised keys (``local@domain``, ``local``, ``@domain``) to a value: an address,
    or ``@domain`` meaning "keep the local part"."""

    entries: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, address: Address, local_domain: bool) -> Address | None:
        local = address.local.lower()
        keys = [f"{local}@{address.domain}"]
        if local_domain:
            keys.append(local)
        keys.append(f"@{address.domain}")
        for key in keys:
            value = self.entries.get(key)
            if value is not None:
                return _apply(value, address)
        return None


def _apply(value: str, address: Address) -> Address:
    if value.startswith("@"):
        return address.with_domain(value[1:])
    return parse_mailbox(value)  # checked when the table was read


def load_generic_table(path: str | os.PathLike[str]) -> tuple[GenericTable, list[TableError]]:
    """Read and parse the table file; bad lines are reported and skipped."""
    lines, errors = read_table(path)
    return _build(lines, errors, str(path)), errors


def parse_generic_table(
    data: bytes, name: str = "<generic>"
) -> tuple[GenericTable, list[TableError]]:
    lines, errors = split_table(data, name)
    return _build(lines, errors, name), errors


def _build(lines: list[TableLine], errors: list[TableError], name: str) -> GenericTable:
    return GenericTable(keyed_entries(lines, errors, name, _parse_key, _parse_value))


def _parse_key(text: str) -> str:
    try:
        if text.startswith("@"):
            return "@" + parse_domain(text[1:])
        if "@" in text:
            address = parse_mailbox(text)
            return f"{address.local.lower()}@{address.domain}"
        return parse_mailbox(text + "@x.invalid").local.lower()
    except AddressError as exc:
        raise ValueError(f"bad key {text!r}: {exc}") from None


def _parse_value(text: str) -> str:
    try:
        if text.startswith("@"):
            return "@" + parse_domain(text[1:])
        if "@" not in text:
            raise AddressError("expected an address or @domain")
        return str(parse_mailbox(text))
    except AddressError as exc:
        raise ValueError(f"bad value {text!r}: {exc}") from None


# ---- the rewriter -------------------------------------------------------------------------
class AddressRewriter:
    """Rewrites addresses of outgoing mail; safe to share (it keeps no state per message)."""

    def __init__(
        self,
        masquerade_as: str = "",
        masquerade_domains: Iterable[str] = (),
        exceptions: Iterable[str] = ("root",),
        local_domains: Iterable[str] = (),
        table: GenericTable | WatchedFile[GenericTable] | None = None,
        envelope: bool = True,
        recipient_headers: bool = False,
    ) -> None:
        self.masquerade_as = masquerade_as.lower()
        domains = [d.lower() for d in masquerade_domains]
        self.exact = frozenset(d for d in domains if not d.startswith("."))
        self.parents = tuple(d for d in domains if d.startswith("."))
        self.exceptions = frozenset(e.lower() for e in exceptions)
        self.local_domains = frozenset(d.lower() for d in local_domains)
        # a table file is followed (core.watchedfile): each address sees the version of now
        self._table = table if table is not None else GenericTable()
        self.envelope = envelope
        fields = SENDER_FIELDS | (RECIPIENT_FIELDS if recipient_headers else frozenset())
        self.fields = fields

    @property
    def table(self) -> GenericTable:
        table = self._table
        return table.current() if isinstance(table, WatchedFile) else table

    @property
    def active(self) -> bool:
        """Anything to do: masquerading, a table file (it may fill later) or entries."""
        return (
            bool(self.masquerade_as) or isinstance(self._table, WatchedFile) or len(self._table) > 0
        )

    def address(self, text: str) -> str | None:
        """``text`` (``local@domain``) rewritten, or None when no rule applies to it."""
        try:
            address = parse_mailbox(text, utf8=True)
        except AddressError:
            return None
        if not address.domain or address.domain.startswith("["):
            return None
        found = self.table.lookup(address, address.domain in self.local_domains)
        if found is None and self._masquerades(address):
            found = address.with_domain(self.masquerade_as)
        return str(found) if found is not None else None

    def _masquerades(self, address: Address) -> bool:
        if not self.masquerade_as or address.local.lower() in self.exceptions:
            return False
        domain = address.domain
        return domain in self.exact or any(
            domain == parent[1:] or domain.endswith(parent) for parent in self.parents
        )

    def sender(self, address: str) -> str:
        """The envelope sender as it leaves; the null sender stays null."""
        if not address or not self.envelope:
            return address
        return self.address(address) or address

    def headers(self, headers: HeaderList) -> HeaderList:
        """A copy of ``headers`` with the addresses of the rewritten fields rewritten."""
        return HeaderList(self._header(h) if h.name.lower() in self.fields else h for h in headers)

    def _header(self, header: Header) -> Header:
        try:
            value = header.value.decode("utf-8")
        except UnicodeDecodeError:
            return header
        spans = address_spans(value)
        if not spans:
            return header
        for start, end in reversed(spans):  # from the end: earlier offsets stay valid
            new = self.address(value[start:end])
            if new is not None:
                value = value[:start] + new + value[end:]
        return Header(header.name, value.encode("utf-8"))


def rewriter_from_settings(
    settings: Settings, *, follow: bool = True
) -> tuple[AddressRewriter | None, list[TableError]]:
    """The rewriter for ``[rewrite]`` (None when nothing is to be rewritten) and the table's
    problems (``follow``: the table follows its file). A missing table at the default path is
    no problem: it is optional."""
    r = settings.rewrite
    table: GenericTable | WatchedFile[GenericTable] = GenericTable()
    errors: list[TableError] = []
    if r.generic_table is not None and (r.generic_table != DEFAULT_TABLE or DEFAULT_TABLE.exists()):
        if follow:  # the daemon: the file is followed, its problems logged
            table = WatchedFile(r.generic_table, load_generic_table, GenericTable(), name=GENERIC)
            errors = table.errors
        else:  # a check (``config check``): read once, the caller shows the problems
            table, errors = load_generic_table(r.generic_table)
    local = [*settings.local_domains, settings.local_domain]
    rewriter = AddressRewriter(
        masquerade_as=r.masquerade_as,
        masquerade_domains=r.masquerade_domains or local,
        exceptions=r.masquerade_exceptions,
        local_domains=local,
        table=table,
        envelope=r.masquerade_envelope,
        recipient_headers=r.recipient_headers,
    )
    return (rewriter if rewriter.active else None), errors


# ---- finding the addresses in a header value ----------------------------------------------
_SPACE = " \t\r\n"
_SPECIALS = '()<>,:;"[]\\'


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "space", "comment", "quoted", "literal", "atom", or the special character
    start: int
    end: int


def _tokens(value: str) -> list[_Token] | None:
    """The lexical tokens of an address list; None when a quote, comment or literal is open."""
    tokens: list[_Token] = []
    i = 0
    while i < len(value):
        found = _token(value, i)
        if found is None:
            return None
        kind, end = found
        tokens.append(_Token(kind, i, end))
        i = end
    return tokens


def _token(value: str, i: int) -> tuple[str, int] | None:
    """The kind and end of the token at ``i``; None if it is unterminated or out of place."""
    ch = value[i]
    if ch in _SPACE:
        return "space", _run_end(value, i, lambda c: c in _SPACE)
    if ch == "(":
        end = _comment_end(value, i)
        return None if end is None else ("comment", end)
    if ch in '"[':
        end = _closing(value, i, '"' if ch == '"' else "]")
        return None if end is None else ("quoted" if ch == '"' else "literal", end)
    if ch in "\\]":
        return None
    if ch in _SPECIALS:
        return ch, i + 1
    return "atom", _run_end(value, i, lambda c: c not in _SPACE and c not in _SPECIALS)


def _run_end(value: str, i: int, belongs: Callable[[str], bool]) -> int:
    while i < len(value) and belongs(value[i]):
        i += 1
    return i


def _closing(value: str, start: int, close: str) -> int | None:
    """End (exclusive) of the quoted string or literal opening at ``start``."""
    i = start + 1
    while i < len(value):
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == close:
            return i + 1
        i += 1
    return None


def _comment_end(value: str, start: int) -> int | None:
    depth, i = 0, start
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def address_spans(value: str) -> list[tuple[int, int]] | None:
    """Where the addr-specs of an address-list field value are, as (start, end) offsets;
    None when the value does not parse. Groups (``name: a@b, c@d;``) are looked into; a
    mailbox whose address cannot be cut out cleanly contributes no span."""
    tokens = _tokens(value)
    if tokens is None:
        return None
    spans: list[tuple[int, int]] = []
    element: list[_Token] = []
    in_group = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "<":
            close = next((j for j in range(i, len(tokens)) if tokens[j].kind == ">"), None)
            if close is None:
                return None
            element.append(_Token("angle", token.start, tokens[close].end))
            element.extend(tokens[i + 1 : close])  # the inside, read by _mailbox_span
            element.append(tokens[close])
            i = close + 1
            continue
        if token.kind == ">":
            return None
        if token.kind == ":":
            if in_group:
                return None
            in_group, element = True, []  # the group's display name
        elif token.kind in (",", ";"):
            if token.kind == ";" and not in_group:
                return None
            _add_span(element, spans)
            element = []
            in_group = in_group and token.kind == ","
        else:
            element.append(token)
        i += 1
    if in_group:
        return None
    _add_span(element, spans)
    return spans


def _add_span(element: list[_Token], spans: list[tuple[int, int]]) -> None:
    span = _mailbox_span(element)
    if span is not None:
        spans.append(span)


def _mailbox_span(element: list[_Token]) -> tuple[int, int] | None:
    kinds = [t.kind for t in element]
    if "angle" in kinds:
        at = kinds.index("angle")
        close = kinds.index(">", at)
        if any(k not in ("space", "comment") for k in kinds[close + 1 :]):
            return None  # text after <...>
        inner = element[at + 1 : close]
        colons = [j for j, t in enumerate(inner) if t.kind == ":"]
        if colons:  # an obsolete source route: @a,@b:local@domain
            inner = inner[colons[-1] + 1 :]
        return _addr_spec(inner)
    return _addr_spec([t for t in element if t.kind != "comment"])


def _addr_spec(tokens: list[_Token]) -> tuple[int, int] | None:
    """The span of ``tokens`` (spaces at the edges dropped) if it is one unbroken
    ``local@domain`` text: atoms, quoted strings and literals, nothing between them."""
    while tokens and tokens[0].kind == "space":
        tokens = tokens[1:]
    while tokens and tokens[-1].kind == "space":
        tokens = tokens[:-1]
    if not tokens or any(t.kind not in ("atom", "quoted", "literal") for t in tokens):
        return None
    if any(a.end != b.start for a, b in itertools.pairwise(tokens)):
        return None  # a space or comment inside the address
    return tokens[0].start, tokens[-1].end
