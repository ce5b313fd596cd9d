"""Header fields a submission server adds when the author left them out (RFC 6409 section 8).

Pure functions that build the values of ``From:``, ``Date:``, ``Message-ID:`` and
Sendmail's ``X-Authentication-Warning:``; used by the ``sendmail`` command line (which
knows ``-F``) and by the daemon for local submissions (which knows the caller's uid).
Standard library only and no dataclasses: this is on the fast ``sendmail`` path.
Reads no settings; callers pass host name and domain.
"""

from __future__ import annotations

import binascii
import time

from mailwright.core.queueid import new_queue_id

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 5322 "specials": a display name containing one must be a quoted-string
_SPECIALS = frozenset('()<>[]:;@\\,."')

# the fields whose absence a submission server repairs, in the order it adds them
COMPLETED_FIELDS = ("From", "Date", "Message-ID")


def date_value(when: float | None = None) -> str:
    """RFC 5322 date-time in local time with its numeric offset, locale-independent."""
    now = time.time() if when is None else when
    t = time.localtime(now)
    offset = t.tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset), 60)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{hours:02d}{minutes:02d}"
    )


def message_id_value(hostname: str) -> str:
    """A new ``<unique@host>``: the queue id is time-ordered and random in its tail."""
    return f"<{new_queue_id()}@{hostname}>"


def display_name(name: str) -> str:
    """A phrase for ``From:``: as is, quoted when it has specials, RFC 2047 when not ASCII."""
    name = " ".join(name.split())
    if not name:
        return ""
    if not name.isascii():
        encoded = binascii.b2a_base64(name.encode("utf-8"), newline=False).decode("ascii")
        return f"=?utf-8?b?{encoded}?="
    if any(c in _SPECIALS for c in name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return name


def from_value(address: str, full_name: str = "") -> str:
    """``Full Name <user@domain>``, or ``user@domain`` alone when there is no name."""
    phrase = display_name(full_name)
    return f"{phrase} <{address}>" if phrase else address


def gecos_name(gecos: str, login: str) -> str:
    """The full name from a passwd GECOS field: its first comma-separated part, with
    BSD's ``&`` standing for the capitalised login name."""
    name = gecos.split(",", 1)[0].strip()
    return name.replace("&", login[:1].upper() + login[1:])


def authentication_warning(hostname: str, user: str, sender: str) -> str:
    """Sendmail's wording, which log watchers and people grep for."""
    shown = sender if sender else "<>"
    return f"{hostname}: {user} set sender to {shown} using -f"


class Rcpt:
    """One recipient of a local submission, with its DSN parameters as RCPT sends them."""

    __slots__ = ("address", "notify", "orcpt")

    def __init__(self, address: str, notify: str | None = None, orcpt: str | None = None) -> None:
        self.address = address
        self.notify = notify  # "NEVER" or e.g. "SUCCESS,FAILURE"; None: not given
        self.orcpt = orcpt  # "rfc822;xtext" as received; None: not given

    def __repr__(self) -> str:
        return f"Rcpt({self.address!r}, notify={self.notify!r}, orcpt={self.orcpt!r})"


class SubmissionEnvelope:
    """The envelope of a local submission: what MAIL and RCPT will say.

    The same object travels over the local socket (as SMTP) and into the maildrop
    (as JSON), so both ways carry exactly the same information.
    """

    __slots__ = ("body_type", "envid", "recipients", "ret", "sender", "smtputf8")

    def __init__(
        self,
        sender: str,
        recipients: list[Rcpt],
        *,
        ret: str | None = None,
        envid: str | None = None,
        body_type: str | None = None,
        smtputf8: bool = False,
    ) -> None:
        self.sender = sender  # "" is the null reverse-path <>
        self.recipients = recipients
        self.ret = ret  # FULL or HDRS
        self.envid = envid  # decoded; xtext-encoded on the wire
        self.body_type = body_type  # 7BIT or 8BITMIME; None: not declared
        self.smtputf8 = smtputf8

    def with_recipients(self, recipients: list[Rcpt]) -> SubmissionEnvelope:
        return SubmissionEnvelope(
            self.sender,
            recipients,
            ret=self.ret,
            envid=self.envid,
            body_type=self.body_type,
            smtputf8=self.smtputf8,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "sender": self.sender,
            "recipients": [
                {"address": r.address, "notify": r.notify, "orcpt": r.orcpt}
                for r in self.recipients
            ],
            "ret": self.ret,
            "envid": self.envid,
            "body": self.body_type,
            "smtputf8": self.smtputf8,
        }

    @classmethod
    def from_json(cls, data: object) -> SubmissionEnvelope:
        """Rebuild from ``to_json`` output; ``ValueError`` for anything else."""
        if not isinstance(data, dict):
            raise ValueError("envelope is not an object")
        sender = data.get("sender")
        rcpts = data.get("recipients")
        if not isinstance(sender, str) or not isinstance(rcpts, list) or not rcpts:
            raise ValueError("envelope needs a sender and at least one recipient")
        recipients = []
        for item in rcpts:
            if not isinstance(item, dict) or not isinstance(item.get("address"), str):
                raise ValueError("bad recipient entry")
            recipients.append(
                Rcpt(item["address"], _opt_text(item, "notify"), _opt_text(item, "orcpt"))
            )
        return cls(
            sender,
            recipients,
            ret=_opt_text(data, "ret"),
            envid=_opt_text(data, "envid"),
            body_type=_opt_text(data, "body"),
            smtputf8=data.get("smtputf8") is True,
        )


def _opt_text(data: dict[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{key} must be text")
