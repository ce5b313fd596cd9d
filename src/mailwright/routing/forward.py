"""Item files that users and administrators control: ``~/.forward`` and ``:include:`` lists.

Both hold aliases(5) items (``routing.items``), one or more per line, ``#`` comment
lines and blank lines ignored.

``.forward`` is consulted after aliases, for users with a home directory, along
``routing.forward_path`` (``$z`` home, ``$w`` host name, ``$u`` user; the first file
that exists wins). It is ignored, and the reason logged, unless it is a regular
file owned by the user or root (through a symbolic link: owned by the user), not
group or world writable, in a directory that is not group or world writable
(unless sticky), and a root-owned file has no other hard links. A missing home
directory simply means no ``.forward``.

``:include:/path`` files may be anywhere. Their items are controlled by the file's
owner (a root-owned file: the default user); when the reference came from a user's
``.forward`` the file must be readable by that user, as if the user had read it. A
group or world writable include file may still list addresses, but programs and
files from it are refused; so are those from a ``.forward`` or include file whose
owner has no valid login shell (one listed in ``/etc/shells``).

Trusts the file system's ownership and modes. Reads no settings (the caller passes
the forward path and host name).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from mailwright.routing.items import Item, parse_items
from mailwright.routing.localusers import LocalUser, account, account_name, groups_of

log = logging.getLogger("mailwright.routing")

MAX_SIZE = 1 << 20  # an item file larger than this is refused
SHELLS = Path("/etc/shells")


class ItemFileError(Exception):
    """An item file that cannot be used; ``transient`` ones are worth trying again."""

    def __init__(self, path: Path, reason: str, transient: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.transient = transient


@dataclass(slots=True)
class ItemFile:
    path: Path
    items: list[Item]
    owner_uid: int
    owner: str  # owner's login name ("" when unknown)
    unsafe: str = ""  # why programs and files from it are refused ("" = allowed)
    problems: list[str] = field(default_factory=list)  # "path:line: problem"


def forward_paths(templates: list[str], user: LocalUser, hostname: str) -> list[Path]:
    out = []
    for template in templates:
        text = template.replace("$z", user.home).replace("$w", hostname).replace("$u", user.name)
        if text.startswith("~/"):
            text = user.home + text[1:]
        if text.startswith("/"):
            out.append(Path(text))
    return out


def read_forward(templates: list[str], user: LocalUser, hostname: str) -> ItemFile | None:
    """The user's ``.forward``, or None (none, or ignored as unsafe: logged).

    Raises ``ItemFileError`` (transient) when it exists but could not be read now.
    """
    if user.virtual or not user.home or user.home == "/nonexistent":
        return None
    for path in forward_paths(templates, user, hostname):
        try:
            found = _read(path, owners={user.uid, 0}, symlink_owners={user.uid}, strict_dir=True)
        except ItemFileError as exc:
            if exc.transient:
                raise
            log.warning("%s: .forward ignored: %s", path, exc.reason)
            continue
        if found is None:
            continue
        if not valid_shell(user.shell):
            found.unsafe = f"user {user.name} has no valid shell"
        return found
    return None


def read_include(path: Path, reader_uid: int | None = None) -> ItemFile:
    """An ``:include:`` file; ``reader_uid`` is the user whose ``.forward`` named it.

    Raises ``ItemFileError`` when it cannot be used (missing, unreadable, not a file).
    """
    found = _read(path, owners=None, symlink_owners=None, strict_dir=False, reader=reader_uid)
    if found is None:
        raise ItemFileError(path, "No such file or directory")
    if found.owner_uid != 0:
        pw = account(found.owner)
        if pw is None or not valid_shell(pw.pw_shell):
            found.unsafe = (
                found.unsafe or f"owner {found.owner or found.owner_uid} has no valid shell"
            )
    return found


def valid_shell(shell: str) -> bool:
    """Is ``shell`` listed in /etc/shells (any shell counts when the file is missing)?"""
    try:
        listed = {
            line.strip() for line in SHELLS.read_text().splitlines() if line.strip()[:1] == "/"
        }
    except OSError:
        return True
    return shell in listed


def _read(
    path: Path,
    *,
    owners: set[int] | None,
    symlink_owners: set[int] | None,
    strict_dir: bool,
    reader: int | None = None,
) -> ItemFile | None:
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    except OSError as exc:
        raise _error(path, exc) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _error(path, exc) from None
    try:
        st = os.fstat(fd)
        _check(path, link, st, owners, symlink_owners, reader)
        if strict_dir:
            _check_directory(path.parent)
        data = os.read(fd, MAX_SIZE + 1)
    except OSError as exc:
        raise _error(path, exc) from None
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        raise ItemFileError(path, f"larger than {MAX_SIZE} bytes")
    items, problems = _parse(path, data)
    owner = account_name(st.st_uid)
    unsafe = "group or world writable" if st.st_mode & 0o022 else ""
    return ItemFile(path, items, st.st_uid, owner, unsafe, problems)


def _check(
    path: Path,
    link: os.stat_result,
    st: os.stat_result,
    owners: set[int] | None,
    symlink_owners: set[int] | None,
    reader: int | None,
) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ItemFileError(path, "not a regular file")
    if owners is not None:
        allowed = symlink_owners if stat.S_ISLNK(link.st_mode) and symlink_owners else owners
        if st.st_uid not in allowed:
            raise ItemFileError(path, f"owned by uid {st.st_uid}, not by the user or root")
        if st.st_mode & 0o022:
            raise ItemFileError(path, "group or world writable")
        if st.st_uid == 0 and st.st_nlink > 1:
            raise ItemFileError(path, "root-owned file with several hard links")
    if reader is not None and reader != 0 and not _readable_by(st, reader):
        raise ItemFileError(path, "Permission denied")


def _check_directory(directory: Path) -> None:
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise _error(directory, exc) from None
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise ItemFileError(directory, "in a group or world writable directory")


def _readable_by(st: os.stat_result, uid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR)
    groups = groups_of(uid)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def _parse(path: Path, data: bytes) -> tuple[list[Item], list[str]]:
    items: list[Item] = []
    problems: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            problems.append(f"{path}:{number}: not valid UTF-8")
            continue
        if not line or line.startswith("#"):
            continue
        found, bad = parse_items(line)
        items.extend(found)
        problems.extend(f"{path}:{number}: {p}" for p in bad)
    return items, problems


def _error(path: Path, exc: OSError) -> ItemFileError:
    transient = exc.errno not in (
        errno.EACCES,
        errno.EPERM,
        errno.ELOOP,
        errno.ENOTDIR,
        errno.EISDIR,
    )
    return ItemFileError(path, exc.strerror or str(exc), transient=transient)
