"""Local users: who has a mailbox on this host, and where it is.

By default the system's passwd database (``pwd.getpwnam``): user names are looked up
in lower case first (Sendmail folds local names), the mailbox is
``<local_delivery.mail_spool>/<user>`` (an mbox file, or a Maildir directory with
``mailbox_format = "maildir"``), and deliveries run as that user when we are root.

For hosts without system accounts, ``local_delivery.virtual_mailbox_table`` lists
``name  path`` lines instead (names case-insensitive; a relative path is under the
mail spool; a path ending in ``/`` is a Maildir). Those mailboxes belong to
``local_delivery.virtual_user`` (or the daemon's own user). The table is re-read
when it changes. Trusts the passwd database and the table file's owner (root).
Settings: ``local_delivery.*``.
"""

from __future__ import annotations

import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mailwright.core.watchedfile import WatchedFile
from mailwright.routing.table import TableError, read_table

if TYPE_CHECKING:
    from mailwright.config.schema import Settings

log = logging.getLogger("mailwright.routing")


@dataclass(frozen=True, slots=True)
class LocalUser:
    name: str
    uid: int
    gid: int
    home: str  # "" when unknown (virtual users)
    shell: str
    mailbox: Path
    maildir: bool  # the mailbox is a Maildir directory
    virtual: bool = False  # from the virtual mailbox table: no .forward, no home


class LocalUsers(Protocol):
    def lookup(self, name: str) -> LocalUser | None:
        """The user called ``name`` (any case), or None."""
        ...


class PasswdUsers:
    """System accounts (passwd, or whatever NSS serves)."""

    def __init__(self, spool: Path, maildir: bool = False) -> None:
        self.spool = spool
        self.maildir = maildir

    def lookup(self, name: str) -> LocalUser | None:
        for candidate in dict.fromkeys((name.lower(), name)):
            if not candidate or "/" in candidate or candidate.startswith("."):
                continue
            try:
                pw = pwd.getpwnam(candidate)
            except (KeyError, UnicodeEncodeError):
                continue
            return LocalUser(
                name=pw.pw_name,
                uid=pw.pw_uid,
                gid=pw.pw_gid,
                home=pw.pw_dir,
                shell=pw.pw_shell,
                mailbox=self.spool / pw.pw_name,
                maildir=self.maildir,
            )
        return None


@dataclass(frozen=True, slots=True)
class _Mailbox:
    path: Path
    maildir: bool


class VirtualMailboxes:
    """``name  path`` lines; every mailbox owned by one uid/gid."""

    def __init__(self, table: Path, spool: Path, uid: int, gid: int) -> None:
        self.spool = spool
        self.uid = uid
        self.gid = gid
        self.file: WatchedFile[dict[str, _Mailbox]] = WatchedFile(table, self._parse, {})

    def lookup(self, name: str) -> LocalUser | None:
        found = self.file.current().get(name.lower())
        if found is None:
            return None
        return LocalUser(
            name=name.lower(),
            uid=self.uid,
            gid=self.gid,
            home="",
            shell="",
            mailbox=found.path,
            maildir=found.maildir,
            virtual=True,
        )

    def _parse(self, path: Path) -> tuple[dict[str, _Mailbox], list[TableError]]:
        lines, problems = read_table(path)
        out: dict[str, _Mailbox] = {}
        for line in lines:
            key = line.key.lower().rstrip(":")
            if "@" in key or "/" in key:
                problems.append(TableError(str(path), line.number, f"{key}: not a user name"))
                continue
            value = line.value.split()[0]
            if ".." in Path(value).parts:
                problems.append(TableError(str(path), line.number, f"{value}: '..' not allowed"))
                continue
            out.setdefault(key, _Mailbox(self.spool / value, value.endswith("/")))
        return out, problems


def account(name: str) -> pwd.struct_passwd | None:
    """A system account by name (controlling users of programs and files)."""
    try:
        return pwd.getpwnam(name)
    except (KeyError, UnicodeEncodeError):
        return None


def run_as(controller: str, default_user: str = "nobody", allow_root: bool = False) -> str:
    """Who runs a program or writes a file controlled by ``controller`` (Sendmail's rule):
    that user; root only with ``allow_root`` (``service.root_programs``); root and ""
    become ``default_user``, and that, if root or unknown, ``nobody``. The resolver names
    this user in the target (and ``-bv``), delivery acts as it (a name without an account
    there: the default user too)."""
    pw = account(controller) if controller else None
    if controller and (pw is None or pw.pw_uid != 0 or allow_root):
        return controller
    fallback = account(default_user) if default_user else None
    if fallback is not None and fallback.pw_uid != 0:
        return fallback.pw_name
    return "nobody"


def account_name(uid: int) -> str:
    """The login name of ``uid``, or "" when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def groups_of(uid: int) -> set[int]:
    """Every group ``uid`` belongs to (primary and supplementary)."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return set()
    return set(os.getgrouplist(pw.pw_name, pw.pw_gid))


def local_users(settings: Settings, own: tuple[int, int] | None = None) -> LocalUsers:
    """The user database the settings choose; ``own`` is the daemon's uid and gid when the
    caller is not the daemon itself (the privileged helper: virtual mailboxes belong to
    the service user, not to root)."""
    ld = settings.local_delivery
    maildir = ld.mailbox_format.value == "maildir"
    if ld.virtual_mailbox_table is None:
        return PasswdUsers(ld.mail_spool, maildir)
    owner = account(ld.virtual_user) if ld.virtual_user else None
    if ld.virtual_user and owner is None:
        log.error("local_delivery.virtual_user %r does not exist; using our own", ld.virtual_user)
    uid, gid = (owner.pw_uid, owner.pw_gid) if owner else (own or (os.geteuid(), os.getegid()))
    return VirtualMailboxes(ld.virtual_mailbox_table, ld.mail_spool, uid, gid)
