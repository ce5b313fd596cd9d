"""Fuzz target: xtext (``core/xtext.py``) and the DSN values from strangers (``dsn/*``).

The input, as UTF-8 text, is used three ways: as xtext to decode (ASCII and UTF-8
forms) and text to encode; as a ``MAIL FROM:``/``RCPT TO:`` line whose ENVID, ORCPT
and NOTIFY parameters, once the SMTP parser accepts them, go into the report's
``message/delivery-status`` fields; and as what the queue stores and the report reads
back (a last reply for ``Diagnostic-Code``, a remote MTA name, an ORCPT). Checks:

- ``xtext.decode`` accepts exactly the RFC 3461 grammar (checked against an independent
  pattern) and raises nothing but ``XtextError``; ``encode`` is its exact inverse for any
  text, and encoding what was decoded gives valid xtext of the same value;
- the report parsers (``decode_orcpt``, ``parse_notify``, ``Diagnostic.coerce``,
  ``remote_mta_name``) raise nothing on stored values;
- the status fields are CRLF lines of at most 998 octets, ASCII unless UTF-8 is allowed,
  one field per value (no value starts a new field or line), folded lines start with a
  space; ENVID and ORCPT read back (unfolded) as sent, or as xtext of it when unsafe.
"""

from __future__ import annotations

import re
import sys

from _harness import fuzz, instrumented

with instrumented(__name__):
    from mailwright.core import xtext
    from mailwright.core.envelope import Envelope, MailParams, Recipient
    from mailwright.core.headers import HeaderList
    from mailwright.dsn import Action, Diagnostic, OriginalMessage, RecipientReport
    from mailwright.dsn.diagnostic import remote_mta_name
    from mailwright.dsn.recipient import decode_orcpt, parse_notify
    from mailwright.dsn.status import per_message, per_recipient
    from mailwright.smtp.command import CommandError, Extensions, parse_mail, parse_rcpt

# RFC 3461 section 4: xtext = *( xchar / hexchar ); RFC 6533 adds UTF-8 characters
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_XTEXT_UTF8 = re.compile(r"(?:[!-*,-<>-~\u0080-\U0010ffff]|\+[0-9A-F]{2})*")
_FIELD_START = re.compile(rb"[A-Za-z][A-Za-z0-9-]*: ")
EXTENSIONS = Extensions.everything()
MAX_PIECE = 900  # dsn.fieldtext cuts longer words, adding a space


def _check_xtext(text: str) -> None:
    assert xtext.decode(xtext.encode(text), utf8=True) == text, "encode is not inverted"
    for utf8, grammar in ((False, _XTEXT), (True, _XTEXT_UTF8)):
        try:
            decoded = xtext.decode(text, utf8=utf8)
        except xtext.XtextError:
            assert not grammar.fullmatch(text), f"valid xtext {text!r} refused"
            continue
        assert grammar.fullmatch(text), f"invalid xtext {text!r} decoded to {decoded!r}"
        assert xtext.decode(xtext.encode(decoded), utf8=True) == decoded


def _check_stored(text: str) -> None:
    decode_orcpt(text)
    str(Diagnostic.coerce(text))
    remote_mta_name(text)


def _unfolded(block: bytes, utf8: bool) -> dict[str, str]:
    """The fields of a status block, checked line by line, unfolded."""
    text = block.decode("utf-8")
    assert utf8 or text.isascii(), "non-ASCII in a delivery-status part"
    assert block.endswith(b"\r\n"), "unterminated field"
    lines = block[:-2].split(b"\r\n")
    fields: dict[str, str] = {}
    name = ""
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, f"bare line ending in {line!r}"
        assert len(line) <= 998, f"line of {len(line)} octets"
        start = _FIELD_START.match(line)
        if line.startswith(b" "):
            assert name, "continuation line first"
            fields[name] += line.decode("utf-8")
            continue
        assert start is not None, f"neither field nor continuation: {line!r}"
        name = line[: start.end() - 2].decode("ascii")
        assert name not in fields, f"field {name} twice: a value started a field"
        fields[name] = line[start.end() :].decode("utf-8")
    return fields


def _reads_back(written: str, sent: str, prefix: int = 0) -> bool:
    """A value written as sent, or xtext-encoded; a word too long for a line (with the
    ``prefix`` octets before it) is cut with a space, so then spaces do not count."""
    encoded = xtext.encode(sent)
    words = [*sent.split(" "), *encoded.split(" ")]
    if any(prefix + len(w.encode()) >= MAX_PIECE for w in words):
        return written.replace(" ", "") in (sent.replace(" ", ""), encoded.replace(" ", ""))
    if written == sent:
        return True
    try:
        return xtext.decode(written, utf8=True) == sent
    except xtext.XtextError:
        return False


def _check_envid(params: MailParams) -> None:
    envelope = Envelope(None, params)
    original = OriginalMessage("FUZZ1", envelope, 0.0, HeaderList(), lambda: iter(()))
    for utf8 in (False, True):
        fields = _unfolded(per_message(original, reporting_mta="mx.test", utf8=utf8), utf8)
        envid = params.envid
        if envid is None:
            assert "Original-Envelope-Id" not in fields
        elif utf8 or envid.isascii():
            written = fields["Original-Envelope-Id"]
            assert _reads_back(written, envid), f"ENVID {envid!r} written as {written!r}"


def _check_recipient(recipient: Recipient, text: str) -> None:
    report = RecipientReport.from_recipient(
        recipient, Action.FAILED, "5.1.1", remote_mta=text, diagnostic=Diagnostic.coerce(text)
    )
    if recipient.notify is not None:
        stored = ",".join(sorted(recipient.notify))
        assert parse_notify(stored) == recipient.notify
    for utf8 in (False, True):
        fields = _unfolded(per_recipient(report, utf8=utf8), utf8)
        assert fields["Action"] == "failed" and fields["Status"] == "5.1.1"
        original = report.original_recipient
        if original is None:
            assert "Original-Recipient" not in fields
            continue
        kind, _, sent = original.partition(";")
        if utf8 or sent.isascii():
            written = fields["Original-Recipient"]
            assert written.startswith(f"{kind};"), f"ORCPT type lost in {written!r}"
            value = written[len(kind) + 1 :]
            assert _reads_back(value, sent, len(kind) + 1), f"ORCPT {sent!r} written as {written!r}"


def check(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    _check_xtext(text)
    _check_stored(text)
    verb, _, args = text.partition(" ")
    try:
        if verb.upper() == "MAIL":
            _, params, _, _ = parse_mail(args, EXTENSIONS)
            _check_envid(params)
        elif verb.upper() == "RCPT":
            recipient, _, _ = parse_rcpt(args, EXTENSIONS, utf8=True)
            _check_recipient(recipient, args)
    except CommandError:
        return


if __name__ == "__main__":
    fuzz(check)
    sys.exit(0)
