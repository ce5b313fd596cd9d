"""Giving up root: the service account, the queue handed over to it, and the drop itself.

Started as root with ``service.user`` set, the daemon runs as that account once its
sockets are bound and the privileged helper is forked. Before the drop the queue
directory and what the daemon writes in it (the database and its WAL, ``tmp/``, the
maildrop, ``rejected/``, ``corrupt/``, the compiled aliases, the master lock, the workers'
``metrics/``) are given to the account; maildrop *files* keep their owners (the owner is
the submitter's identity). The drop is for good: supplementary groups, gid, then uid,
and a check that root cannot be had back.
Nothing creates the account: ``useradd --system`` it first (``docs/service.md``).

Trusts the passwd and group databases. Settings: ``service.user``, ``service.group``,
``queue.directory``, ``local.maildrop``.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from mailwright.config.loader import ConfigError
from mailwright.config.schema import ServiceSection, Settings

log = logging.getLogger("mailwright.daemon")

# what the daemon writes in the queue directory, besides the directory itself
QUEUE_ENTRIES = (
    "queue.db",
    "queue.db-wal",
    "queue.db-shm",
    "queue.db-journal",
    "queue.db.bodies",  # the body log (queue.bodylog); its segments are given below
    "tmp",
    "maildrop",
    "rejected",
    "corrupt",
    "aliases.db",
    "master.lock",
    "metrics",  # the workers' metric value files (observability.metrics, several workers)
)


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @property
    def ids(self) -> tuple[int, int]:
        return self.uid, self.gid


STAY_ROOT = "root"  # service.user that keeps the daemon root, as Sendmail runs


def service_account(section: ServiceSection) -> ServiceAccount | None:
    """The account to become, or None: not root, or ``service.user = "root"`` (stay root).

    ``ConfigError`` when the user or group does not exist, or the group is root's.
    """
    if os.geteuid() != 0 or section.user in ("", STAY_ROOT):
        return None
    try:
        pw = pwd.getpwnam(section.user)
    except KeyError:
        raise ConfigError(
            f"service.user: no user {section.user!r} "
            f"(create it: useradd --system --home-dir /var/spool/mailwright "
            f"--shell /usr/sbin/nologin {section.user})"
        ) from None
    if pw.pw_uid == 0:
        raise ConfigError(
            f"service.user: {section.user!r} has uid 0; name an unprivileged user"
            f' (or "{STAY_ROOT}" to stay root)'
        )
    gid = pw.pw_gid
    if section.group:
        try:
            gid = grp.getgrnam(section.group).gr_gid
        except KeyError:
            raise ConfigError(f"service.group: no group {section.group!r}") from None
        if gid == 0:
            raise ConfigError("service.group: the root group gives too much; name another")
    groups = tuple(g for g in os.getgrouplist(pw.pw_name, gid) if g != 0)
    return ServiceAccount(pw.pw_name, pw.pw_uid, gid, groups or (gid,))


def hand_over_queue(settings: Settings, account: ServiceAccount) -> None:
    """Create the queue directory if needed and give it (and its entries) to ``account``.

    Entries are changed through a descriptor of the directory and never followed: a
    symbolic link the account left there must not make root chown something else.
    """
    queue_dir = settings.queue.directory
    queue_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _give(queue_dir, account)
    fd = os.open(queue_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in QUEUE_ENTRIES:
            _give(Path(name), account, dir_fd=fd)
        _give_entries("queue.db.bodies", account, dir_fd=fd)
    finally:
        os.close(fd)
    if settings.maildrop_dir.parent != queue_dir:
        _give(settings.maildrop_dir, account)  # the account deletes what it picked up


def _give(path: Path, account: ServiceAccount, dir_fd: int | None = None) -> None:
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        log.warning("%s is a symbolic link; not giving it to %s", path, account.name)
        return
    if (st.st_uid, st.st_gid) != account.ids:
        os.chown(path, account.uid, account.gid, dir_fd=dir_fd, follow_symlinks=False)


def _give_entries(name: str, account: ServiceAccount, dir_fd: int) -> None:
    """The entries of directory ``name`` (segments a run as root wrote), links not followed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        sub = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as exc:  # a link, or not a directory: not ours to walk into
        log.warning("%s: not giving its entries to %s: %s", name, account.name, exc.strerror)
        return
    try:
        for entry in os.listdir(sub):
            _give(Path(entry), account, dir_fd=sub)
    finally:
        os.close(sub)


def drop(account: ServiceAccount) -> None:
    """Become ``account`` for good; ``PermissionError`` if root could be had back."""
    os.setgroups(list(account.groups))
    os.setgid(account.gid)
    os.setuid(account.uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PermissionError("still able to become root after dropping privileges")
    if os.geteuid() != account.uid or os.getegid() != account.gid:
        raise PermissionError("could not drop privileges")
    os.environ.update({"USER": account.name, "LOGNAME": account.name, "HOME": _home(account.name)})


def _home(name: str) -> str:
    try:
        return pwd.getpwnam(name).pw_dir or "/"
    except KeyError:
        return "/"
