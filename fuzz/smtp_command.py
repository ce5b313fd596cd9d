"""Fuzz target: the SMTP command parser (``smtp/command.py``) on any command line.

The input is one command line as the server hands it over (valid UTF-8 without CR, LF
or NUL; anything else never reaches the parser and is skipped). Its verb is split off,
then its arguments, and the line itself, are parsed as ``MAIL FROM:`` and ``RCPT TO:``
arguments with every extension on and with all off, strict and lax, with and without
SMTPUTF8. Checks:

- the parser raises nothing but ``CommandError``, whose reply is a single well-formed
  5xx line with an enhanced status code of class 5;
- ``split_command`` upper-cases only ASCII verbs and strips the arguments;
- an accepted path is ``<...>``; the null sender only from ``<>``; an accepted address
  prints canonically and parses back to itself;
- parameters appear only for extensions offered; SIZE is ASCII digits; ENVID and ORCPT
  decode from xtext within their limits and re-encode to the same value; NOTIFY is
  NEVER alone or a set of SUCCESS, FAILURE, DELAY; raw parameters contain no space.
"""

from __future__ import annotations

import re
import sys

from _harness import fuzz, instrumented

with instrumented(__name__):
    from mailwright.core import xtext
    from mailwright.core.address import Address, parse_path
    from mailwright.core.envelope import MailParams, Notify, Recipient
    from mailwright.smtp.command import (
        CommandError,
        Extensions,
        parse_mail,
        parse_rcpt,
        split_command,
    )

ALL = Extensions.everything()
NONE = Extensions()
_ERROR_LINE = re.compile(rb"5[0-9][0-9] 5\.[0-9]{1,3}\.[0-9]{1,3} [^\r\n]*\r\n")


def _check_error(exc: CommandError) -> None:
    wire = exc.reply.encode()
    assert _ERROR_LINE.fullmatch(wire), f"malformed refusal {wire!r}"


def _check_path(path: str, address: Address | None) -> None:
    assert path.startswith("<") and path.endswith(">"), f"path {path!r}"
    if address is None:
        assert path == "<>", f"null sender from {path!r}"
        return
    again = parse_path(f"<{address}>", utf8=True, allow_null=False)
    assert again == address, f"{address!r} prints as {address} which parses as {again!r}"


def _check_raw(raw: list[str]) -> None:
    assert all(p and " " not in p for p in raw), f"raw parameters {raw!r}"


def _check_mail(args: str, ext: Extensions, strict: bool) -> None:
    try:
        sender, params, path, raw = parse_mail(args, ext, strict=strict)
    except CommandError as exc:
        _check_error(exc)
        return
    _check_path(path, sender)
    _check_raw(raw)
    _check_params(params, ext)


def _check_params(params: MailParams, ext: Extensions) -> None:
    if ext.size is None:
        assert params.size is None
    if params.size is not None:
        assert 0 <= params.size < 10**20
    if not ext.smtputf8:
        assert not params.smtputf8
    if not ext.dsn:
        assert params.ret is None and params.envid is None
    if not ext.auth:
        assert params.auth is None
    if params.envid is not None:
        assert len(params.envid) <= 100
        assert xtext.decode(xtext.encode(params.envid), utf8=True) == params.envid


def _check_rcpt(args: str, ext: Extensions, utf8: bool, strict: bool) -> None:
    try:
        recipient, path, raw = parse_rcpt(args, ext, utf8=utf8, strict=strict)
    except CommandError as exc:
        _check_error(exc)
        return
    _check_path(path, recipient.address)
    _check_raw(raw)
    _check_recipient(recipient, ext)


def _check_recipient(recipient: Recipient, ext: Extensions) -> None:
    if not ext.dsn:
        assert recipient.notify is None and recipient.orcpt is None
    notify = recipient.notify
    if notify is not None:
        assert notify, "empty NOTIFY accepted"
        assert Notify.NEVER not in notify or notify == {Notify.NEVER}
    if recipient.orcpt is not None:
        kind, semi, value = recipient.orcpt.partition(";")
        assert semi and kind and value, f"ORCPT {recipient.orcpt!r}"
        decoded = xtext.decode(value, utf8=True)
        assert len(decoded) <= 500
        assert xtext.decode(xtext.encode(decoded), utf8=True) == decoded


def check(data: bytes) -> None:
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the server answers 500 itself; the parser never sees it
    if any(c in line for c in "\r\n\0"):
        return
    command = split_command(line)
    if command.verb.isascii():
        assert command.verb == command.verb.upper()
    assert command.args == command.args.strip(" ")
    for args in {command.args, line}:
        for ext in (ALL, NONE):
            for strict in (False, True):
                _check_mail(args, ext, strict)
                for utf8 in (False, True):
                    _check_rcpt(args, ext, utf8, strict)


if __name__ == "__main__":
    fuzz(check)
    sys.exit(0)
