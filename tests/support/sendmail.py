"""Run ``sendmail``/``mailq``/``newaliases`` as real programs against a real daemon's queue.

The entry points are small scripts like the ones pip installs (``from
mailwright.cli.sendmail import main``), in a temporary bin directory, with ``mailq`` and
``newaliases`` as symbolic links to ``sendmail``: the program name selects the mode.
Directories live in a short, world-traversable ``/tmp`` directory so that Unix socket
paths stay under 108 bytes and another user (``nobody``) can reach them.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import StoredMessage
from tests.support.daemon import SRC, Mailwright

ENTRY_POINT = f"""#!{sys.executable}
import sys
from mailwright.cli.sendmail import main
sys.exit(main())
"""


@contextmanager
def short_tmp() -> Iterator[Path]:
    """A directory like /tmp/mwAbC123, readable and searchable by every user."""
    path = Path(tempfile.mkdtemp(prefix="mw", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def daemon_tools(config: dict[str, Any] | None = None) -> Iterator[Tools]:
    """A running daemon for ``mx.test`` (``config`` merged in) and its command-line tools."""
    with short_tmp() as root:
        mw = Mailwright(root, {"hostname": "mx.test", **(config or {})})
        mw.start()
        try:
            yield Tools(mw, root / "bin")
        finally:
            mw.stop()


def make_entry_points(bindir: Path) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "sendmail"
    script.write_text(ENTRY_POINT)
    script.chmod(0o755)
    for name in ("mailq", "newaliases"):
        link = bindir / name
        if not link.exists():
            link.symlink_to("sendmail")
    return script


class Tools:
    """The command-line programs, bound to one daemon configuration."""

    def __init__(self, mw: Mailwright, bindir: Path) -> None:
        self.mw = mw
        self.bindir = bindir
        make_entry_points(bindir)
        mw.write_config()
        mw.config_path.chmod(0o644)

    @property
    def queue_dir(self) -> Path:
        return Path(self.mw.config["queue"]["directory"])

    @property
    def maildrop(self) -> Path:
        return self.queue_dir / "maildrop"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(SRC),
            "MAILWRIGHT_CONFIG": str(self.mw.config_path),
            "LANG": "C.UTF-8",
        }
        env.update(extra)
        return env

    def run(
        self,
        *args: str,
        input: bytes = b"",
        program: str = "sendmail",
        user: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bindir / program), *args]
        if user is not None:
            command = [
                "setpriv",
                f"--reuid={user}",
                f"--regid={user_group(user)}",
                "--clear-groups",
                *command,
            ]
        return subprocess.run(
            command,
            input=input,
            capture_output=True,
            env=env or self.env(),
            timeout=timeout,
            cwd="/",
        )

    # ---- the queue ----------------------------------------------------------------------
    def store(self) -> SqliteQueueStore:
        store = SqliteQueueStore(self.queue_dir / "queue.db")
        store.open_for_reading()
        return store

    def queue_ids(self) -> set[str]:
        if not (self.queue_dir / "queue.db").exists():
            return set()
        store = self.store()
        try:
            return {m.queue_id for m in store.list_messages()}
        finally:
            store.close()

    def read(self, queue_id: str) -> tuple[StoredMessage, EmailMessage, bytes]:
        store = self.store()
        try:
            stored = store.get_message(queue_id)
            assert stored is not None, f"{queue_id} is not in the queue"
            raw = (
                store.read_headers(queue_id).encode()
                + b"\r\n"
                + b"".join(store.read_body(queue_id))
            )
        finally:
            store.close()
        parsed = email.message_from_bytes(raw, policy=email.policy.SMTP)
        assert isinstance(parsed, EmailMessage)
        return stored, parsed, raw

    def submit(
        self, *args: str, input: bytes = b"", **kw: Any
    ) -> tuple[subprocess.CompletedProcess[bytes], StoredMessage, EmailMessage, bytes]:
        """Run sendmail and return the one message it queued."""
        before = self.queue_ids()
        proc = self.run(*args, input=input, **kw)
        assert proc.returncode == 0, proc.stderr.decode()
        new = self.queue_ids() - before
        assert len(new) == 1, f"expected one new message, got {new}: {proc.stderr.decode()}"
        return (proc, *self.read(new.pop()))


def user_group(user: str) -> str:
    import grp
    import pwd

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def envelope_of(stored: StoredMessage) -> tuple[str, list[str]]:
    return stored.envelope.sender_text, [str(r.address) for r in stored.envelope.recipients]


# ---- sendmail -bs over a pipe, driven by smtplib ----------------------------------------------
class PipeSocket:
    """What smtplib needs of a socket, over a child's stdin and stdout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def sendall(self, data: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(data)
        stdin.flush()

    def makefile(self, mode: str) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()


def smtp_over_pipe(tools: Tools, user: str | None = None) -> tuple[smtplib.SMTP, Any]:
    command = [str(tools.bindir / "sendmail"), "-bs"]
    if user:
        group = user_group(user)
        command = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", *command]
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=tools.env(), cwd="/"
    )
    client = smtplib.SMTP()
    client.sock = PipeSocket(proc)  # type: ignore[assignment]
    code, greeting = client.getreply()
    assert code == 220, greeting
    return client, proc
