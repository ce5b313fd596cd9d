"""The SMTP service extensions in force on a session (RFC 5321 4.1.1.1), sans-I/O.

One ``Extensions`` is what an EHLO (or LHLO) reply offered: the peer's, read by the
client with ``parse``, or ours, which the server checks MAIL and RCPT parameters
against (``smtp.command``): a parameter of an extension not offered is refused. After
HELO every extension is off (the default). ``parse`` trusts nothing in the reply: an
odd SIZE value counts as SIZE without a limit. A ``core.record.Record``, not a dataclass:
the ``sendmail`` path loads it. Reads no settings.
"""

from __future__ import annotations

from mailwright.core.record import Record
from mailwright.core.reply import Reply


class Extensions(Record):
    """What an EHLO reply offered (all off after HELO). Not changed after ``__init__``."""

    __slots__ = (
        "auth",
        "chunking",
        "dsn",
        "eightbitmime",
        "enhancedstatuscodes",
        "esmtp",
        "keywords",
        "pipelining",
        "requiretls",
        "size",
        "smtputf8",
        "starttls",
    )

    def __init__(
        self,
        esmtp: bool = False,
        pipelining: bool = False,
        size: int | None = None,
        eightbitmime: bool = False,
        smtputf8: bool = False,
        dsn: bool = False,
        chunking: bool = False,
        starttls: bool = False,
        enhancedstatuscodes: bool = False,
        auth: tuple[str, ...] = (),
        keywords: dict[str, str] | None = None,
        requiretls: bool = False,
    ) -> None:
        self.esmtp = esmtp
        self.pipelining = pipelining
        self.size = size  # None: no SIZE keyword; 0: SIZE without a limit
        self.eightbitmime = eightbitmime
        self.smtputf8 = smtputf8
        self.dsn = dsn
        self.chunking = chunking
        self.starttls = starttls
        self.enhancedstatuscodes = enhancedstatuscodes
        self.auth = auth  # SASL mechanisms
        self.requiretls = requiretls  # RFC 8689; offered only over TLS
        self.keywords: dict[str, str] = {} if keywords is None else keywords  # keyword -> value

    @classmethod
    def everything(cls) -> Extensions:
        """Every extension whose MAIL and RCPT parameters Mailwright reads (to re-read
        parameters it wrote itself, or a filter's)."""
        return cls(
            esmtp=True,
            pipelining=True,
            size=0,
            eightbitmime=True,
            smtputf8=True,
            dsn=True,
            chunking=True,
            enhancedstatuscodes=True,
            auth=("PLAIN", "LOGIN"),
            requiretls=True,
        )

    @classmethod
    def parse(cls, reply: Reply) -> Extensions:
        keywords: dict[str, str] = {}
        for line in reply.lines[1:]:
            key, _, value = line.strip().partition(" ")
            if key:
                keywords[key.upper()] = value.strip()
        size: int | None = None
        if "SIZE" in keywords:
            value = keywords["SIZE"]
            # ASCII digits only: "²".isdigit() is true and int("²") raises
            size = int(value) if value.isascii() and value.isdigit() and len(value) < 20 else 0
        auth = keywords.get("AUTH", "")
        if "AUTH" not in keywords:  # old servers: "AUTH=LOGIN PLAIN"
            old = next((k for k in keywords if k.startswith("AUTH=")), None)
            auth = f"{old[5:]} {keywords[old]}" if old else ""
        return cls(
            esmtp=True,
            pipelining="PIPELINING" in keywords,
            size=size,
            eightbitmime="8BITMIME" in keywords,
            smtputf8="SMTPUTF8" in keywords,
            dsn="DSN" in keywords,
            chunking="CHUNKING" in keywords,
            starttls="STARTTLS" in keywords,
            enhancedstatuscodes="ENHANCEDSTATUSCODES" in keywords,
            auth=tuple(auth.upper().split()),
            keywords=keywords,
            requiretls="REQUIRETLS" in keywords,
        )
