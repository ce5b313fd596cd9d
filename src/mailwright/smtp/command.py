"""Parsing SMTP command lines and their ESMTP parameters (RFC 5321 4.1, RFC 1870,
3030, 3461, 4954, 6152, 6531).

Trusts nothing: every malformed line becomes a ``CommandError`` carrying the exact
reply to send. Keywords, parameter names and numbers are ASCII only: ``str.isdigit``,
``int`` and ``str.upper`` accept far more (superscript and Arabic-Indic digits; U+017F,
long s, upper-cases to "S"), so they are only applied after ``isascii``. Reads no
settings; limits and the envelope strictness (Postfix's ``strict_rfc821_envelopes``)
come from the caller.
"""

from __future__ import annotations

from typing import NamedTuple

from mailwright.core import xtext
from mailwright.core.address import Address, AddressError, parse_path
from mailwright.core.envelope import BodyType, MailParams, Notify, Recipient, Ret
from mailwright.core.reply import Reply
from mailwright.smtp.extensions import Extensions

MAX_SIZE_DIGITS = 20


class CommandError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _syntax(status: str, text: str, code: int = 501) -> CommandError:
    return CommandError(Reply.of(code, status, text))


class Command(NamedTuple):  # a tuple: made for every command line, cheaply
    verb: str  # upper case
    args: str  # everything after the verb and one space, as sent


def split_command(line: str) -> Command:
    verb, _, args = line.partition(" ")
    # a non-ASCII verb stays as sent: upper() turns a dotless i (U+0131) into "I"
    return Command(verb.upper() if verb.isascii() else verb, args.strip(" "))


def ascii_number(text: str, max_digits: int) -> int | None:
    """``text`` as a number if it is 1..``max_digits`` ASCII digits, else None."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _keyword(value: str) -> str:
    """An ASCII keyword value in upper case; anything else cannot match a keyword."""
    return value.upper() if value.isascii() else ""


def _split_path(args: str, keyword: str, strict: bool) -> tuple[str, list[str]]:
    """``FROM:<path> params`` -> (``<path>``, [params]). Tolerates a space after the colon.

    Unless ``strict``, a path without angle brackets (``FROM:user@domain``) is taken up
    to the next space and returned bracketed, as Sendmail and Postfix do.
    """
    head = args[: len(keyword) + 1]
    if _keyword(head) != keyword + ":":
        raise _syntax("5.5.4", f"Syntax: {keyword}:<address>")
    rest = args[len(keyword) + 1 :].lstrip(" ")
    if not rest.startswith("<"):
        if strict or not rest:
            raise _syntax("5.5.4", f"Syntax: {keyword}:<address>")
        bare, _, params = rest.partition(" ")
        return f"<{bare}>", [p for p in params.split(" ") if p]
    end = _path_end(rest)
    if end < 0:
        raise _syntax("5.5.4", "Unterminated address: missing >")
    path, params = rest[: end + 1], rest[end + 1 :]
    if params and not params.startswith(" "):
        raise _syntax("5.5.4", "Syntax: parameters must follow the address after a space")
    return path, [p for p in params.split(" ") if p]


def _path_end(text: str) -> int:
    if '"' not in text:
        return text.find(">")  # no quoted local part: the first ">" ends the path
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
        i += 1
    return -1


def _params(items: list[str]) -> list[tuple[str, str | None]]:
    seen: set[str] = set()
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        ukey = key.upper()
        if not key or not key.isascii() or not all(c.isalnum() or c == "-" for c in key):
            raise _syntax("5.5.4", f"Malformed parameter: {item[:40]}")
        if ukey in seen:
            raise _syntax("5.5.4", f"Duplicate parameter {ukey}")
        seen.add(ukey)
        out.append((ukey, value if eq else None))
    return out


def _unsupported(key: str) -> CommandError:
    return CommandError(Reply.of(555, "5.5.4", f"Unsupported parameter {key}"))


def _need(value: str | None, key: str) -> str:
    if value is None or value == "":
        raise _syntax("5.5.4", f"{key} requires a value")
    return value


def parse_mail(
    args: str, ext: Extensions, strict: bool = False
) -> tuple[Address | None, MailParams, str, list[str]]:
    """Parse ``FROM:<path> [params]``; returns the sender, params, raw path and raw params."""
    path, raw = _split_path(args, "FROM", strict)
    params = MailParams()
    for key, value in _params(raw):
        _mail_param(params, key, value, ext)
    try:
        sender = parse_path(path, utf8=params.smtputf8, allow_null=True)
    except AddressError as exc:
        raise CommandError(Reply.of(553, "5.1.7", f"Bad sender address syntax: {exc}")) from None
    return sender, params, path, raw


def _mail_param(params: MailParams, key: str, value: str | None, ext: Extensions) -> None:
    if key == "SIZE" and ext.size is not None:
        size = ascii_number(_need(value, key), MAX_SIZE_DIGITS)
        if size is None:
            raise _syntax("5.5.4", "SIZE must be a number of octets (ASCII digits)")
        params.size = size
    elif key == "BODY" and ext.eightbitmime:
        try:
            params.body = BodyType(_keyword(_need(value, key)))
        except ValueError:
            raise _syntax("5.5.4", "BODY must be 7BIT or 8BITMIME") from None
        if params.body is BodyType.BINARY:
            raise _unsupported("BODY=BINARYMIME")
    elif key == "SMTPUTF8" and ext.smtputf8:
        if value is not None:
            raise _syntax("5.5.4", "SMTPUTF8 takes no value")
        params.smtputf8 = True
    elif key == "REQUIRETLS" and ext.requiretls:
        if value is not None:
            raise _syntax("5.5.4", "REQUIRETLS takes no value")
        params.requiretls = True
    elif key == "RET" and ext.dsn:
        try:
            params.ret = Ret(_keyword(_need(value, key)))
        except ValueError:
            raise _syntax("5.5.4", "RET must be FULL or HDRS") from None
    elif key == "ENVID" and ext.dsn:
        params.envid = _xtext(_need(value, key), key, limit=100)
    elif key == "AUTH" and bool(ext.auth):
        text = _need(value, key)
        params.auth = "<>" if text == "<>" else _xtext(text, key, limit=500)
    else:
        raise _unsupported(key)


def _xtext(value: str, key: str, limit: int) -> str:
    try:
        decoded = xtext.decode(value, utf8=True)
    except xtext.XtextError:
        raise _syntax("5.5.4", f"{key} is not valid xtext") from None
    if len(decoded) > limit:
        raise _syntax("5.5.4", f"{key} too long")
    return decoded


def parse_rcpt(
    args: str, ext: Extensions, utf8: bool, strict: bool = False
) -> tuple[Recipient, str, list[str]]:
    """Parse ``TO:<path> [params]``. ``postmaster`` without a domain is allowed."""
    path, raw = _split_path(args, "TO", strict)
    notify: frozenset[Notify] | None = None
    orcpt: str | None = None
    for key, value in _params(raw):
        if key == "NOTIFY" and ext.dsn:
            notify = _notify(_need(value, key))
        elif key == "ORCPT" and ext.dsn:
            orcpt = _orcpt(_need(value, key))
        else:
            raise _unsupported(key)
    try:
        address = parse_path(path, utf8=utf8, allow_null=False)
    except AddressError as exc:
        raise CommandError(Reply.of(553, "5.1.3", f"Bad recipient address syntax: {exc}")) from None
    assert address is not None
    return Recipient(address, notify, orcpt), path, raw


def _notify(value: str) -> frozenset[Notify]:
    try:
        items = frozenset(Notify(_keyword(v)) for v in value.split(","))
    except ValueError:
        raise _syntax("5.5.4", "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY") from None
    if Notify.NEVER in items and len(items) > 1:
        raise _syntax("5.5.4", "NOTIFY=NEVER cannot be combined")
    if len(items) != len(value.split(",")):
        raise _syntax("5.5.4", "Duplicate NOTIFY keyword")
    return items


def _orcpt(value: str) -> str:
    kind, semi, addr = value.partition(";")
    if not semi or not kind or not addr or not kind.isascii():
        raise _syntax("5.5.4", "ORCPT must be addr-type;xtext")
    if not all(c.isalnum() or c == "-" for c in kind):
        raise _syntax("5.5.4", "ORCPT must be addr-type;xtext")
    _xtext(addr, "ORCPT", limit=500)
    return value
