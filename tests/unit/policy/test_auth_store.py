"""The users file of SMTP AUTH: parsing with file:line errors, hashing, checking."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from mailwright.policy import auth

HASH = auth.hash_password("right", rounds=4)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "users"
    path.write_text(text)
    path.chmod(0o640)
    return path


def test_hash_is_salted_and_checks() -> None:
    other = auth.hash_password("right", rounds=4)
    assert other != HASH and other.startswith("$2b$04$")
    assert auth.password_matches("right", HASH.encode())
    assert not auth.password_matches("wrong", HASH.encode())
    assert not auth.password_matches("", HASH.encode())
    assert not auth.password_matches("x" * 100, HASH.encode())  # never cut to 72 octets


@pytest.mark.parametrize("password", ["", "x" * 73, "a\0b"])
def test_unusable_passwords_refused(password: str) -> None:
    with pytest.raises(ValueError):
        auth.hash_password(password, rounds=4)


def test_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"# users\n\nalice:{HASH}\nbob\nca rol:{HASH}\ndave:plaintext\nalice:{HASH}\neve:{HASH}\n",
    )
    users, errors = auth.read_users(path)
    assert sorted(users) == ["alice", "eve"]
    assert [str(e) for e in errors] == [
        f"{path}:4: expected user:hash",
        f"{path}:5: 'ca rol' is not a valid user name (no spaces, colons or control characters)",
        f"{path}:6: the hash is not bcrypt ($2b$...): make it with 'mailwright auth adduser'",
        f"{path}:7: user 'alice' again (first on line 3)",
    ]


def test_file_writable_by_others_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f"alice:{HASH}\n")
    path.chmod(0o666)
    users, errors = auth.read_users(path)
    assert users == {} and "group or others may write it" in str(errors[0])


def test_write_users_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "users"
    auth.write_users(path, {"alice": HASH.encode()})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert auth.read_users(path) == ({"alice": HASH.encode()}, [])
    assert [p.name for p in tmp_path.iterdir()] == ["users"]


def test_authenticator_checks_and_follows_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"alice:{HASH}\n")
    checker = auth.Authenticator.from_file(path, max_concurrent=2)
    checker.users.interval = 0

    async def main() -> None:
        assert await checker.check("alice", "right")
        assert not await checker.check("alice", "wrong")
        assert not await checker.check("nobody", "right")  # decoy work, same answer
        results = await asyncio.gather(*(checker.check("alice", "right") for _ in range(6)))
        assert all(results)
        path.write_text(f"alice:{auth.hash_password('new', rounds=4)}\n")
        assert await checker.check("alice", "new")
        assert not await checker.check("alice", "right")

    asyncio.run(main())
