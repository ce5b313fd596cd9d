"""The credential store for SMTP AUTH: a users file of salted bcrypt hashes.

The file has one ``user:hash`` line per user (``$2b$`` bcrypt, made by
``mailwright auth adduser``); blank lines and ``#`` comments are ignored. Every
problem is reported as ``file:line: problem`` and the line skipped; a file that
group or others may write is refused as a whole. ``Authenticator.check`` runs the
deliberately slow hash in a worker thread, a few at a time, and spends the same
work on unknown users so timing does not reveal which names exist. Passwords
are never logged, printed or kept. ``bcrypt`` is imported only when a password
is hashed or checked, so a daemon without AUTH runs without it. Settings: ``auth.users_file``,
``auth.max_concurrent_checks``.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import stat
from pathlib import Path

from mailwright.core.tablefile import TableError, entry_lines
from mailwright.core.watchedfile import WatchedFile

DEFAULT_ROUNDS = 12  # about a quarter of a second per check on one core
MAX_PASSWORD = 72  # octets bcrypt looks at; longer ones are refused, never cut
_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_BAD_NAME = re.compile(r"[\x00-\x20\x7f:]")

Users = dict[str, bytes]  # user name -> bcrypt hash


def valid_user_name(name: str) -> bool:
    return 0 < len(name) <= 256 and not _BAD_NAME.search(name)


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """A new salted hash; ``ValueError`` for a password bcrypt cannot take whole."""
    data = password.encode("utf-8")
    if not data:
        raise ValueError("the password is empty")
    if len(data) > MAX_PASSWORD or b"\0" in data:
        raise ValueError(f"the password must be at most {MAX_PASSWORD} octets without NUL")
    import bcrypt

    return bcrypt.hashpw(data, bcrypt.gensalt(rounds)).decode("ascii")


def password_matches(password: str, hashed: bytes) -> bool:
    data = password.encode("utf-8")
    if not data or len(data) > MAX_PASSWORD or b"\0" in data:
        return False
    import bcrypt

    try:
        return bcrypt.checkpw(data, hashed)
    except ValueError:
        return False


def parse_users(text: bytes, name: str) -> tuple[Users, list[TableError]]:
    users: Users = {}
    first_line: dict[str, int] = {}
    errors: list[TableError] = []
    for number, line in entry_lines(text, name, errors):
        user, colon, hashed = line.partition(":")
        problem = _entry_problem(user, colon, hashed.strip())
        if problem is None and user in users:
            problem = f"user {user!r} again (first on line {first_line[user]})"
        if problem is not None:
            errors.append(TableError(name, number, problem))
            continue
        users[user] = hashed.strip().encode("ascii")
        first_line[user] = number
    return users, errors


def _entry_problem(user: str, colon: str, hashed: str) -> str | None:
    if not colon:
        return "expected user:hash"
    if not valid_user_name(user):
        return f"{user!r} is not a valid user name (no spaces, colons or control characters)"
    if not _HASH.match(hashed):
        return "the hash is not bcrypt ($2b$...): make it with 'mailwright auth adduser'"
    return None


def read_users(path: Path) -> tuple[Users, list[TableError]]:
    try:
        st = os.stat(path)
        data = path.read_bytes()
    except OSError as exc:
        return {}, [TableError(str(path), 0, f"cannot read: {exc.strerror or exc}")]
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return {}, [TableError(str(path), 0, "group or others may write it: refusing it")]
    return parse_users(data, str(path))


def write_users(path: Path, users: Users) -> None:
    """Replace the file atomically (mode 0640), keeping its comments out: one line a user."""
    lines = [f"{user}:{hashed.decode('ascii')}\n" for user, hashed in users.items()]
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Authenticator:
    """Checks a user name and password against the users file (kept fresh)."""

    def __init__(self, users: WatchedFile[Users], max_concurrent: int = 4) -> None:
        self.users = users
        self._slots = asyncio.Semaphore(max_concurrent)
        self._decoy: bytes | None = None

    @classmethod
    def from_file(cls, path: Path, max_concurrent: int = 4) -> Authenticator:
        return cls(WatchedFile(path, read_users, {}), max_concurrent)

    async def check(self, user: str, password: str) -> bool:
        hashed = self.users.current().get(user)
        async with self._slots:
            return await asyncio.to_thread(self._check, hashed, password)

    def _check(self, hashed: bytes | None, password: str) -> bool:
        if hashed is None:
            # the same work as for a real user: no timing difference for unknown names
            password_matches(password, self._decoy_hash())
            return False
        return password_matches(password, hashed)

    def _decoy_hash(self) -> bytes:
        import bcrypt

        if self._decoy is None:
            rounds = DEFAULT_ROUNDS
            for hashed in self.users.current().values():
                rounds = int(hashed[4:6])
                break
            self._decoy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds))
        return self._decoy
