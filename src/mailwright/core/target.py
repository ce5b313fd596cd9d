"""Where a resolved local recipient goes: a mailbox, a program, a file, or a fixed error.

Alias expansion (``routing.resolution``) turns a local address into *targets*; a
queued recipient that carries one is delivered by the local agent without being
routed or expanded again. ``user`` is the controlling user: whose rights a program
or file delivery runs with (the owner of the ``.forward`` or ``:include:`` file the
item came from; "" means the configured default user). Pure data; reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Mailer(StrEnum):
    LOCAL = "local"  # a local user's mailbox; value: the user name
    PROG = "prog"  # a command; value: the command line (without the leading "|")
    FILE = "file"  # append to a file in mbox format; value: its absolute path
    ERROR = "error"  # refuse; value: the reply, e.g. "550 5.1.1 User unknown"

    @property
    def log_name(self) -> str:
        """The mailer name Sendmail logs (``mailer=*file*``)."""
        return "*file*" if self is Mailer.FILE else self.value


@dataclass(frozen=True, slots=True)
class Target:
    mailer: Mailer
    value: str
    user: str = ""  # controlling user for PROG and FILE; "" = the default user

    def __str__(self) -> str:
        if self.mailer is Mailer.PROG:
            return f'"|{self.value}"'
        return self.value
