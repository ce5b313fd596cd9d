"""Progress bars appear on a terminal and never in a pipe: ``aliases build`` of a large file
run with its stderr on a pseudo-terminal, then with it piped."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"
COUNT = 60_000


def build(tmp_path: Path, stderr: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(SRC), TERM="xterm", COLUMNS="100")
    config = tmp_path / "mailwright.toml"
    return subprocess.Popen(
        [sys.executable, "-m", "mailwright", "--config", str(config), "aliases", "build"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


def prepare(tmp_path: Path) -> None:
    lines = (f"list{i}: user{i}, other{i}@example.org\n" for i in range(COUNT))
    (tmp_path / "aliases").write_text("".join(lines))
    (tmp_path / "mailwright.toml").write_text(
        f'[queue]\ndirectory = "{tmp_path / "queue"}"\n'
        f'[routing]\nalias_file = "{tmp_path / "aliases"}"\n'
        f'alias_database = "{tmp_path / "aliases.db"}"\n'
    )


def read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            return out
        if not data:
            return out
        out += data


def test_a_terminal_gets_a_progress_bar(tmp_path: Path) -> None:
    prepare(tmp_path)
    master, slave = pty.openpty()
    proc = build(tmp_path, slave)
    os.close(slave)
    terminal = read_all(master)
    os.close(master)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, terminal
    assert stdout.startswith(f"{tmp_path / 'aliases'}: {COUNT} aliases".encode())
    assert b"reading" in terminal or b"writing" in terminal, terminal[:500]


def test_a_pipe_gets_no_progress_bar(tmp_path: Path) -> None:
    prepare(tmp_path)
    proc = build(tmp_path, subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert stderr == b"" and f"{COUNT} aliases".encode() in stdout
