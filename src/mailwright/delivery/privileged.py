"""Everything local delivery does with root's powers, in one place.

When the daemon runs as root, deliveries act for the recipient (Sendmail's
behaviour): a mailbox in the spool is created for its owner and checked to be
theirs (``delivery.mbox`` does that with ``owner``), programs run under the
controlling user's uid, gid and groups, and writes into places users control (a
file named in a ``.forward``, a Maildir) happen in a child process that gives up
root before it opens anything (``delivery.userwriter``; long-lived, one per identity,
kept by ``delivery.writerpool``). Nobody runs as root: a
controlling user that is root, or unknown, becomes the default user. As an
ordinary user (``make run``) nothing changes identity; everything runs as the
daemon's own user.

A daemon that gave up root (``[service] user``) has these done by the privileged
helper (``privhelper``), which is root and calls the same functions. Reads no
settings (the caller passes the default user and whether root may be kept).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailwright.core.reply import Reply

if TYPE_CHECKING:  # not at run time: the child writer imports this module and no pools
    from mailwright.delivery.workers import Interrupts


@dataclass(frozen=True, slots=True)
class Identity:
    """Whose rights a delivery uses."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def is_root() -> bool:
    return os.geteuid() == 0


def identity(name: str, default_user: str = "nobody", allow_root: bool = False) -> Identity | None:
    """The identity to act as for ``name``; root (unless ``allow_root``) and unknown users
    become ``default_user`` (``routing.localusers.run_as``, the rule ``-bv`` reports).

    Returns None when we are not root (no change of identity is possible).
    """
    if not is_root():
        return None
    from mailwright.routing.localusers import run_as  # not in the child writer

    pw = _passwd(run_as(name, default_user, allow_root))
    if pw is None:  # no such account: the default user
        pw = _passwd(run_as("", default_user, allow_root))
    if pw is None:
        raise LookupError(f"no unprivileged user to act as (tried {name!r}, {default_user!r})")
    groups = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
    return Identity(pw.pw_name, pw.pw_uid, pw.pw_gid, groups, pw.pw_dir)


def for_uid(uid: int, gid: int, name: str = "", home: str = "") -> Identity | None:
    """An identity by numbers (virtual mailbox owners); None when we are not root."""
    if not is_root():
        return None
    groups: tuple[int, ...] = (gid,)
    if name:
        groups = tuple(os.getgrouplist(name, gid))
    return Identity(name or str(uid), uid, gid, groups, home)


def _passwd(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except (KeyError, UnicodeEncodeError):
        return None


def spawn_ids(who: Identity | None) -> tuple[int | None, int | None, list[int] | None]:
    """``user``, ``group`` and ``extra_groups`` for ``subprocess.Popen`` running as ``who``
    (all None: as ourselves)."""
    if who is None:
        return None, None, None
    return who.uid, who.gid, list(who.groups)


def drop_to(uid: int, gid: int, groups: list[int]) -> None:
    """Become ``uid`` for good (the child writer's first act); no way back to root."""
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    if os.geteuid() != uid or os.getuid() != uid:
        raise PermissionError("could not drop privileges")


async def write_as(
    who: Identity,
    command: list[str],
    pieces: Callable[[], Iterator[bytes]],
    timeout: float,
    interrupts: Interrupts | None = None,
) -> Reply | None:
    """Have a ``delivery.userwriter`` running as ``who`` do ``command`` with ``pieces`` as
    the message: one of the long-lived writers of ``delivery.writerpool``.

    Returns None when it delivered, else the (failure) reply it reported. On
    ``interrupts`` (shutdown) the writer gets SIGTERM: it gives up a lock wait (4.2.0)
    but finishes a write it has begun.
    """
    from mailwright.delivery import writerpool  # here: the child writer needs no asyncio

    return await writerpool.pool().write(who, command, pieces, timeout, interrupts)
