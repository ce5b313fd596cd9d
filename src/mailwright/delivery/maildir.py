"""Maildir delivery: a unique file in ``tmp/``, fsync, moved to ``new/``, directory fsynced.

The unique name is ``<seconds>.M<microseconds>P<pid>Q<count>.<host>`` (``/`` and
``:`` in the host name written as ``\\057`` and ``\\072``), with ``,S=<size>`` added
when it moves to ``new/``. The message is written with LF line ends and no
``>From`` quoting (Maildir needs none). The move is a ``rename`` within the
Maildir, then ``new/`` is fsynced: once ``deliver`` returns, the message survives a
power cut. On any failure the file in ``tmp/`` is removed and a ``MailboxError``
says why (quota 4.2.2, disk full 4.3.1). A Maildir that does not exist yet is made
whole beside it (``.NAME.new-...`` with ``tmp``, ``new`` and ``cur``, mode 0700) and
renamed into place, so a mail reader never sees a Maildir without its subdirectories;
missing subdirectories of an existing one are created.

Files left in ``tmp/`` by a delivery that was killed are removed once they are older
than 36 hours (the Maildir convention, ``TMP_MAX_AGE``), by a later delivery to the same
Maildir, at most once an hour per Maildir per process (``cleanup_due``). Reads no
settings.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from mailwright.core.reply import Reply
from mailwright.delivery.mbox import MailboxError, os_error_reply

log = logging.getLogger("mailwright.delivery")

_counter = itertools.count(1)

TMP_MAX_AGE = 36 * 3600.0  # a file this old in tmp/ was left by a delivery that died
CLEANUP_INTERVAL = 3600.0  # tmp/ of one Maildir is looked at no more often
_last_cleanup: dict[str, float] = {}


def unique_name() -> str:
    now = time.time()
    host = (socket.gethostname() or "localhost").replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{next(_counter)}.{host}"


_SUBDIRS = ("tmp", "new", "cur")


def prepare(directory: Path, owner: tuple[int, int] | None = None) -> None:
    """Make sure ``directory`` is a Maildir (creating what is missing)."""
    if not os.path.lexists(directory):
        _create_whole(directory, owner)
    for path in (directory, *(directory / sub for sub in _SUBDIRS)):
        try:
            os.mkdir(path, 0o700)
            if owner is not None:
                os.lchown(path, *owner)
        except FileExistsError:
            pass
        except OSError as exc:
            raise MailboxError(os_error_reply(exc, path)) from exc
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise MailboxError(Reply.of(451, "4.3.0", f"Maildir {path} is not a directory"))
        if owner is not None and st.st_uid != owner[0]:
            raise MailboxError(
                Reply.of(451, "4.3.0", f"Maildir {path} belongs to uid {st.st_uid}, not {owner[0]}")
            )


def cleanup_due(directory: Path, now: float | None = None) -> bool:
    """Whether this delivery to ``directory`` should clean its ``tmp/`` (and note that it
    does): the first one in this process, then once every ``CLEANUP_INTERVAL``."""
    now = time.monotonic() if now is None else now
    key = str(directory)
    last = _last_cleanup.get(key)
    if last is not None and now - last < CLEANUP_INTERVAL:
        return False
    if len(_last_cleanup) > 100_000:  # a bound on memory for hosts with many Maildirs
        _last_cleanup.clear()
    _last_cleanup[key] = now
    return True


def clean_tmp(directory: Path, max_age: float = TMP_MAX_AGE) -> int:
    """Remove the files in ``directory/tmp`` older than ``max_age`` seconds (by their
    modification time); returns how many. Problems are ignored: this is tidying."""
    removed = 0
    limit = time.time() - max_age
    try:
        entries = os.scandir(directory / "tmp")
    except OSError:
        return 0
    with entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_mtime < limit:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
    return removed


def deliver(
    directory: Path,
    pieces: Iterable[bytes],
    owner: tuple[int, int] | None = None,
    clean_tmp: bool | None = None,
) -> str:
    """Write one message into the Maildir ``directory``; returns its name in ``new/``.
    ``clean_tmp``: remove old files from ``tmp/`` first (None: when ``cleanup_due``)."""
    prepare(directory, owner)
    due = clean_tmp if clean_tmp is not None else cleanup_due(directory)
    if due and (removed := _clean_tmp(directory)):
        log.info("%s: removed %d file(s) older than 36 hours from tmp/", directory, removed)
    name = unique_name()
    tmp = directory / "tmp" / name
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as exc:
        raise MailboxError(os_error_reply(exc, tmp)) from exc
    size = 0
    try:
        try:
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                size += len(piece)
            os.fsync(fd)
        finally:
            os.close(fd)
        final = f"{name},S={size}"
        os.rename(tmp, directory / "new" / final)
        _fsync_dir(directory / "new")
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise MailboxError(os_error_reply(exc, directory)) from exc
        raise
    return final


_clean_tmp = clean_tmp  # the name ``deliver``'s argument hides


def _create_whole(directory: Path, owner: tuple[int, int] | None) -> None:
    """A new Maildir, built beside ``directory`` and renamed to it in one step."""
    staging = directory.parent / f".{directory.name}.new-{unique_name()}"
    try:
        for path in (staging, *(staging / sub for sub in _SUBDIRS)):
            os.mkdir(path, 0o700)
            if owner is not None:
                os.lchown(path, *owner)
        os.rename(staging, directory)
        _fsync_dir(directory.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            for sub in _SUBDIRS:
                os.rmdir(staging / sub)
            os.rmdir(staging)
        if os.path.lexists(directory):
            return  # made meanwhile by another delivery: prepare checks what is there
        raise MailboxError(os_error_reply(exc, directory)) from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
