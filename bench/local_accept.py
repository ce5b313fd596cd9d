"""Accepting while delivering locally (issue 12 item 1): does Maildir delivery slow SMTP down?

Runs a Mailwright daemon as root (``service.user = "root"``: the daemon itself writes as
the recipient, through ``delivery.writerpool``'s user writers) in background delivery
mode, with the virtual mailbox ``bench`` (a Maildir owned by ``nobody``:
``local_delivery.virtual_user``), and drives it with Postfix's smtp-source (one
connection per message, ``-s`` sessions) while a probe times ``RCPT TO`` on its own
connection every 50 ms. Reports per run:

    accepted  messages/s until smtp-source ended (every message had its 250)
    delivered messages/s until all of them were in the Maildir's new/
    rcpt      the probe's RCPT latency, median and max (ms)

and the same with ``delivery.mode = "queue"`` (accept only) for reference. ``--old DIR``
also runs the code in ``DIR/src`` (e.g. a ``git worktree add /tmp/oldmain main``); trees
and modes take turns within each repetition, so drift on a shared machine hits all alike.

Usage (as root, from the repository root):
    /work/main/.venv/bin/python bench/local_accept.py [-m 2000] [-s 10] [-r 3]
        [--old /tmp/oldmain] [--modes background,queue]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    tree: str
    mode: str
    accepted: float = 0.0
    delivered: float = 0.0
    rcpt_ms: list[float] = field(default_factory=list)

    def line(self) -> str:
        rcpt = self.rcpt_ms or [float("nan")]
        return (
            f"{self.tree:4} {self.mode:10} accepted={self.accepted:7.1f}/s "
            f"delivered={self.delivered:7.1f}/s rcpt_median={statistics.median(rcpt):6.1f}ms "
            f"rcpt_max={max(rcpt):7.1f}ms probes={len(self.rcpt_ms)}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(work: Path, port: int, mode: str) -> Path:
    path = work / "mailwright.toml"
    path.write_text(
        f"""hostname = "mailwright-under-test.localdomain"

[[listeners]]
address = "127.0.0.1"
port = {port}
kind = "smtp"

[server]
max_connections = 4000
max_connections_per_ip = 4000

[queue]
directory = "{work}/queue"

[service]
user = "root"   # the daemon itself delivers as the recipient (no privileged helper)

[delivery]
mode = "{mode}"

[routing]
local_domains = ["mx.test"]

[local_delivery]
mail_spool = "{work}/mail"
virtual_mailbox_table = "{work}/mailboxes"
virtual_user = "nobody"
"""
    )
    return path


def start(src: Path, conf: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailwright",
            "--config",
            str(conf),
            "serve",
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise SystemExit(f"the daemon did not start: {log.read_text()[-500:]}")


def delivered(maildir: Path) -> int:
    try:
        return len(os.listdir(maildir / "new"))
    except FileNotFoundError:
        return 0


def probe(port: int, stop: threading.Event, out: list[float]) -> None:
    """RCPT latency every 50 ms until ``stop``, on a connection renewed every 20 probes
    (the server ends sessions with many transactions)."""
    while not stop.is_set():
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.ehlo("probe.test")
            for _ in range(20):
                if stop.wait(0.05):
                    break
                s.mail("probe@example.org")
                started = time.perf_counter()
                code, _ = s.rcpt("bench@mx.test")
                out.append((time.perf_counter() - started) * 1000)
                s.rset()
                assert code == 250, code


def one(tree: str, src: Path, mode: str, work: Path, m: int, sessions: int) -> Run:
    shutil.rmtree(work / "queue", ignore_errors=True)
    shutil.rmtree(work / "mail", ignore_errors=True)
    (work / "mail").mkdir(mode=0o755)
    port = free_port()
    conf = config(work, port, mode)
    proc = start(src, conf, port, work / "mailwright.log")
    run = Run(tree, mode)
    try:
        # warm-up: 20 messages to another mailbox, delivered before the measurement
        warm = ["smtp-source", "-s", "2", "-m", "20", "-l", "1024", "-f", "s@example.org"]
        subprocess.run([*warm, "-t", "warm@mx.test", f"127.0.0.1:{port}"], check=True)
        if mode == "background":
            wait_for(work / "mail" / "warm", 20, 120)
        stop = threading.Event()
        prober = threading.Thread(target=probe, args=(port, stop, run.rcpt_ms))
        source = ["smtp-source", "-s", str(sessions), "-m", str(m), "-l", "1024"]
        started = time.monotonic()
        prober.start()
        subprocess.run(
            [*source, "-f", "s@example.org", "-t", "bench@mx.test", f"127.0.0.1:{port}"],
            check=True,
            timeout=1800,
        )
        accepted = time.monotonic() - started
        stop.set()
        prober.join()
        run.accepted = m / accepted
        if mode == "background":
            run.delivered = m / (wait_for(work / "mail" / "bench", m, 1800) - started)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return run


def wait_for(maildir: Path, count: int, limit: float) -> float:
    deadline = time.monotonic() + limit
    while (got := delivered(maildir)) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{maildir}: only {got} of {count} delivered")
        time.sleep(0.02)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", type=int, default=2000, help="messages per run")
    parser.add_argument("-s", type=int, default=10, help="smtp-source sessions")
    parser.add_argument("-r", type=int, default=3, help="repetitions")
    parser.add_argument("--old", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--modes", default="background,queue")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the daemon writes as the recipient only then")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the daemon on the way out
    trees = [("new", ROOT / "src")] + ([("old", args.old / "src")] if args.old else [])
    work = Path(tempfile.mkdtemp(prefix="mw-local-accept-"))
    work.chmod(0o755)  # nobody reaches its Maildir below
    (work / "mailboxes").write_text("bench bench/\nwarm warm/\n")
    runs: list[Run] = []
    print(f"# local_accept m={args.m} sessions={args.s} reps={args.r} cpus={os.cpu_count()}")
    try:
        for _ in range(args.r):
            for tree, src in trees if _ % 2 == 0 else trees[::-1]:
                for mode in args.modes.split(","):
                    run = one(tree, src, mode, work, args.m, args.s)
                    print(run.line(), flush=True)
                    runs.append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| code | mode | accepted msgs/s | delivered msgs/s | RCPT median ms | RCPT max ms |")
    print("|---|---|---|---|---|---|")
    for tree, _src in trees:
        for mode in args.modes.split(","):
            mine = [r for r in runs if r.tree == tree and r.mode == mode]
            acc = [r.accepted for r in mine]
            dlv = [r.delivered for r in mine]
            med = [statistics.median(r.rcpt_ms) for r in mine if r.rcpt_ms]
            top = [max(r.rcpt_ms) for r in mine if r.rcpt_ms]
            delivery = spread(dlv) if mode == "background" else "-"
            print(
                f"| {tree} | {mode} | {spread(acc)} | {delivery} | {spread(med)} | {spread(top)} |"
            )


def spread(values: list[float]) -> str:
    """Median (min-max) of the repetitions."""
    if not values:
        return "NA"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


if __name__ == "__main__":
    main()
