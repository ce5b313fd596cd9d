"""``mailwright auth ...``: manage the users file of SMTP AUTH (bcrypt hashes).

``adduser`` and ``passwd`` read the password from the terminal (twice) or, with
``--password-stdin``, from the first line of standard input; it never appears on
a command line or in any output. The file is rewritten atomically (mode 0640);
a running daemon notices the change by itself. ``check`` reports every problem
as ``file:line: problem`` (exit 78). ``--file`` overrides ``auth.users_file``.
Settings: ``auth.users_file``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mailwright.cli.output import fail
from mailwright.cli.settings import load_or_exit
from mailwright.core.sysexits import ExitCode
from mailwright.policy import auth as store


def _users_path(ctx: click.Context, file: Path | None) -> Path:
    path = file or load_or_exit(ctx).auth.users_file
    if path is None:
        fail("no users file: set auth.users_file or give --file", ExitCode.USAGE)
        raise AssertionError  # not reached
    return path


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.removesuffix("\n").removesuffix("\r")
    first = click.prompt("Password", hide_input=True, err=True)
    second = click.prompt("Again", hide_input=True, err=True)
    if first != second:
        fail("the passwords differ", ExitCode.DATAERR)
    return str(first)


def _load_for_update(path: Path) -> store.Users:
    if not path.exists():
        return {}
    users, errors = store.read_users(path)
    if errors:
        for error in errors:
            click.echo(str(error), err=True)
        fail(f"{path}: fix the problems above first", ExitCode.DATAERR)
    return users


def _set_password(
    ctx: click.Context,
    user: str,
    *,
    new: bool,
    file: Path | None,
    password_stdin: bool,
    rounds: int,
) -> None:
    path = _users_path(ctx, file)
    if not store.valid_user_name(user):
        fail(f"{user!r} is not a valid user name", ExitCode.USAGE)
    users = _load_for_update(path)
    if new and user in users:
        fail(f"{path}: {user} exists (use 'mailwright auth passwd')", ExitCode.DATAERR)
    if not new and user not in users:
        fail(f"{path}: no user {user}", ExitCode.NOUSER)
    try:
        hashed = store.hash_password(_read_password(password_stdin), rounds)
    except ValueError as exc:
        fail(str(exc), ExitCode.DATAERR)
        return
    users[user] = hashed.encode("ascii")
    try:
        store.write_users(path, users)
    except OSError as exc:
        fail(f"{path}: {exc.strerror}", ExitCode.CANTCREAT)


_file_option = click.option(
    "--file", type=click.Path(path_type=Path), help="The users file (default auth.users_file)."
)
_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
_rounds_option = click.option(
    "--rounds",
    default=store.DEFAULT_ROUNDS,
    show_default=True,
    type=click.IntRange(4, 16),
    help="bcrypt cost (each step doubles the work).",
)


@click.group()
def auth() -> None:
    """Users who may log in with SMTP AUTH."""


PasswordCommand = Callable[..., None]


def _password_command(name: str) -> Callable[[PasswordCommand], click.Command]:
    """``auth <name> USER [--file F] [--password-stdin] [--rounds N]``."""

    def make(function: PasswordCommand) -> click.Command:
        for option in (_rounds_option, _stdin_option, _file_option, click.argument("user")):
            function = option(function)
        return auth.command(name)(click.pass_context(function))

    return make


@_password_command("adduser")
def adduser(ctx: click.Context, user: str, **options: Any) -> None:
    """Add a user.

    \b
    Examples:
      mailwright auth adduser alice
      printf '%s\\n' "$PASS" | mailwright auth adduser alice --password-stdin
    """
    _set_password(ctx, user, new=True, **options)
    click.echo(f"added {user}")


@_password_command("passwd")
def passwd(ctx: click.Context, user: str, **options: Any) -> None:
    """Change a user's password.

    \b
    Examples:
      mailwright auth passwd alice
      printf '%s\\n' "$PASS" | mailwright auth passwd alice --password-stdin
    """
    _set_password(ctx, user, new=False, **options)
    click.echo(f"changed the password of {user}")


@auth.command("deluser")
@click.argument("user")
@_file_option
@click.pass_context
def deluser(ctx: click.Context, user: str, file: Path | None) -> None:
    """Remove a user.

    \b
    Example:
      mailwright auth deluser alice
    """
    path = _users_path(ctx, file)
    users = _load_for_update(path)
    if users.pop(user, None) is None:
        fail(f"{path}: no user {user}", ExitCode.NOUSER)
    store.write_users(path, users)
    click.echo(f"removed {user}")


@auth.command("check")
@_file_option
@click.pass_context
def check(ctx: click.Context, file: Path | None) -> None:
    """Report every problem of the users file as file:line: problem.

    \b
    Examples:
      mailwright auth check
      mailwright auth check --file /etc/mailwright/users
    """
    path = _users_path(ctx, file)
    users, errors = store.read_users(path)
    for error in errors:
        click.echo(str(error), err=True)
    if errors:
        sys.exit(ExitCode.CONFIG)
    click.echo(f"{path}: {len(users)} user(s), OK")
