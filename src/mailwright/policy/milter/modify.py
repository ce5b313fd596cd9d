"""Applying a filter's end-of-message modifications to the transaction, all or nothing.

Headers: ADDHEADER appends; INSHEADER inserts at an index counted among the
headers as they will be written (0 = the very top, above our own
``Received:``, as Postfix does); CHGHEADER changes or (empty value) deletes
the Nth field of that name among the headers the filter was shown (our own
``Received:`` is not shown and not counted), and adds the field when there is
no Nth one. Values follow the negotiated ``HDR_LEADSPC`` rule and a filter's
LF becomes CRLF; a line break not followed by white space gets a tab so a
value can never start a new field. Envelope: recipients are added (with ESMTP
parameters, checked like a client's) or deleted by the address given in RCPT,
the sender and its MAIL parameters changed. The body is replaced by the
concatenation of the filter's ``b`` packets (kept in a spool, CRLF line ends).
QUARANTINE puts the message on hold with the reason.

Everything is computed on copies and assigned only when every modification is
valid, so a bad one leaves the transaction untouched (``ModificationError``).
Trusts the filter only as far as the negotiated action bits: a modification
it was not granted is a protocol error (``ModificationError``: the filter has
failed and nothing it sent for the message is applied), as libmilter itself
refuses such a call (``MI_FAILURE``). Reads no settings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailwright.core.address import Address, AddressError, parse_mailbox
from mailwright.core.envelope import MailParams, Recipient
from mailwright.core.headers import Header, HeaderList
from mailwright.policy.hooks import Transaction
from mailwright.policy.milter import codec
from mailwright.policy.milter.codec import Modification
from mailwright.policy.milter.negotiation import Options
from mailwright.queue.spool import Spool
from mailwright.smtp.command import CommandError, parse_mail, parse_rcpt
from mailwright.smtp.extensions import Extensions

_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
_BARE_BREAK = re.compile(rb"\r?\n(?![ \t])")
_EXTENSIONS = Extensions.everything()


class ModificationError(Exception):
    """A modification that cannot be applied; the filter counts as failed."""


class LineEndings:
    """Normalises a replacement body to CRLF across packet boundaries (sans-I/O)."""

    def __init__(self) -> None:
        self._cr = False

    def feed(self, data: bytes) -> bytes:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            data, self._cr = data[:-1], True
        return re.sub(rb"\r?\n|\r", b"\r\n", data)

    def close(self) -> bytes:
        pending, self._cr = self._cr, False
        return b"\r\n" if pending else b""


def header_value(value: bytes, leading_space: bool) -> bytes:
    """A filter's header value as it is written after ``Name:``."""
    value = value.replace(b"\r\n", b"\n").replace(b"\r", b"")
    value = value.replace(b"\n", b"\r\n")
    value = _BARE_BREAK.sub(b"\r\n\t", value)
    return value if leading_space else b" " + value


def own_trace(headers: Sequence[Header], queue_id: str) -> Header | None:
    """Our own ``Received:`` for this message: not shown to filters, not counted."""
    marker = f" id {queue_id}".encode()
    for header in headers:
        value = header.value
        if header.is_("Received") and b"(Mailwright) with " in value and marker in value:
            return header
    return None


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModificationError(f"{what} is not UTF-8: {raw[:60]!r}") from None


def _angle(address: str) -> str:
    address = address.strip()
    return address if address.startswith("<") else f"<{address}>"


def _bare(address: str) -> str:
    return address.strip().removeprefix("<").removesuffix(">")


def _same(recipient: Recipient, address: str) -> bool:
    try:
        other = parse_mailbox(_bare(address), utf8=True, allow_bare_postmaster=True)
    except AddressError:
        return str(recipient.address).lower() == _bare(address).lower()
    mine = recipient.address
    return (mine.local.lower(), mine.domain.lower()) == (other.local.lower(), other.domain.lower())


@dataclass
class Edit:
    """The transaction as the filter wants it; applied by ``commit``."""

    options: Options
    shown_name: str  # the filter's name, for logs
    headers: HeaderList
    recipients: list[Recipient]
    sender: Address | None
    params: MailParams
    raw_sender: str
    raw_params: list[str]
    hidden: Header | None  # our own Received:, not counted by CHGHEADER
    hold_reason: str | None
    body: Spool | None = None  # the replacement body, when there is one

    @classmethod
    def of(cls, txn: Transaction, options: Options, name: str) -> Edit:
        assert txn.headers is not None
        return cls(
            options=options,
            shown_name=name,
            headers=HeaderList(txn.headers),
            recipients=list(txn.recipients),
            sender=txn.sender,
            params=txn.params,
            raw_sender=txn.raw_sender,
            raw_params=list(txn.raw_mail_params),
            hidden=own_trace(txn.headers, txn.queue_id),
            hold_reason=txn.hold_reason,
        )

    def apply(self, mod: Modification) -> None:
        self._check_granted(mod)
        if isinstance(mod, codec.AddHeader):
            self.headers.append(self._header(mod.name, mod.value))
        elif isinstance(mod, codec.InsertHeader):
            self.headers.insert(
                min(mod.index, len(self.headers)), self._header(mod.name, mod.value)
            )
        elif isinstance(mod, codec.ChangeHeader):
            self._change_header(mod)
        elif isinstance(mod, codec.AddRecipient):
            self._add_recipient(mod)
        elif isinstance(mod, codec.DeleteRecipient):
            address = _text(mod.address, "DELRCPT address")
            self.recipients = [r for r in self.recipients if not _same(r, address)]
        elif isinstance(mod, codec.ChangeFrom):
            self._change_from(mod)
        elif isinstance(mod, codec.Quarantine):
            self.hold_reason = mod.reason.decode("utf-8", "replace") or "quarantined by milter"
        # ReplaceBody data goes to ``body`` as it arrives (see ``replace_body``)

    def _check_granted(self, mod: Modification) -> None:
        needed = codec.required_action(mod)
        if not self.options.allows(needed):
            name = type(mod).__name__
            raise ModificationError(f"sent {name} without negotiating the {needed.name} action")

    def replace_body(self, data: bytes, endings: LineEndings, spool_dir: Path | None) -> None:
        """One ``b`` packet: the first starts the new body, the others append to it."""
        self._check_granted(codec.ReplaceBody(data))
        if self.body is None:
            self.body = Spool(spool_dir)
        self.body.write(endings.feed(data))

    def _header(self, raw_name: bytes, raw_value: bytes) -> Header:
        name = _text(raw_name, "header name")
        if not _FIELD_NAME.match(name):
            raise ModificationError(f"invalid header name {name[:60]!r}")
        return Header(name, header_value(raw_value, self.options.leading_space))

    def _change_header(self, mod: codec.ChangeHeader) -> None:
        name = _text(mod.name, "header name")
        if not name:
            return
        index = self._nth(name, max(mod.index, 1))
        if index is None:
            if mod.value:
                self.headers.append(self._header(mod.name, mod.value))
            return
        if not mod.value:
            del self.headers[index]
            return
        old = self.headers[index]  # the field keeps its own spelling of the name
        self.headers[index] = Header(old.name, self._header(mod.name, mod.value).value)

    def _nth(self, name: str, n: int) -> int | None:
        seen = 0
        for i, header in enumerate(self.headers):
            if header is self.hidden or not header.is_(name):
                continue
            seen += 1
            if seen == n:
                return i
        return None

    def _add_recipient(self, mod: codec.AddRecipient) -> None:
        address = _angle(_text(mod.address, "ADDRCPT address"))
        args = _text(mod.args, "ADDRCPT parameters") if mod.args else ""
        try:
            recipient, _, _ = parse_rcpt(f"TO:{address} {args}".rstrip(), _EXTENSIONS, utf8=True)
        except CommandError as exc:
            raise ModificationError(f"bad recipient {address[:80]}: {exc}") from None
        if not any(_same(r, str(recipient.address)) for r in self.recipients):
            self.recipients.append(recipient)

    def _change_from(self, mod: codec.ChangeFrom) -> None:
        address = _angle(_text(mod.address, "CHGFROM address"))
        args = _text(mod.args, "CHGFROM parameters") if mod.args else ""
        try:
            sender, params, raw, raw_params = parse_mail(
                f"FROM:{address} {args}".rstrip(), _EXTENSIONS
            )
        except CommandError as exc:
            raise ModificationError(f"bad sender {address[:80]}: {exc}") from None
        self.sender, self.raw_sender = sender, raw
        if mod.args is not None:
            self.params, self.raw_params = params, raw_params

    def finish_body(self, endings: LineEndings) -> None:
        if self.body is not None:
            self.body.write(endings.close())

    def discard_body(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

    def commit(self, txn: Transaction) -> None:
        """Make the edit the transaction (after every modification was accepted)."""
        if self.body is not None:
            body = txn.body
            if not isinstance(body, Spool):
                raise ModificationError("this message's body cannot be replaced")
            new = self.body
            body.replace(new.chunks())
            new.close()
            self.body = None
        txn.headers = self.headers
        txn.recipients = self.recipients
        txn.sender, txn.params = self.sender, self.params
        txn.raw_sender, txn.raw_mail_params = self.raw_sender, self.raw_params
        txn.hold_reason = self.hold_reason
