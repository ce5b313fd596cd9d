"""Latency of each step of one SMTP session, as a client without pipelining sees it.

Opens ``--count`` sessions one after another to ``--mta`` (a new connection each) and
times, for each: connecting until the greeting, then every command until its reply
(EHLO, MAIL, RCPT, DATA), the content until the 250 that accepts it, and QUIT until the
221. Prints one machine-readable line with the median of each step in ms:

  phases label=mw size=1024 k=300 connect=0.35 ehlo=0.16 mail=0.20 rcpt=0.18 data=0.15
         body=1.10 quit=0.29 total=2.57   (one line)

A step that is slow against another server's shows where the time of a session goes
(``bench/phases.sh`` runs it against Mailwright and Postfix side by side). A raw socket,
stdlib only: nothing in the client varies with the server. Talks to 127.0.0.1 only; every
read has a timeout. Trusts the server to speak SMTP (anything else ends the probe with an
error). Reads no settings.

Usage: python3 bench/phases.py --mta 127.0.0.1:2525 [--count 300] [--size 1024] [--label mw]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time

STEPS = ("connect", "ehlo", "mail", "rcpt", "data", "body", "quit")


class Session:
    """One client connection that reads whole replies (multi-line ones included)."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def reply(self) -> bytes:
        """The last line of the next reply (``250 ...``); raises if the server hangs up."""
        while True:
            end = self.pending.find(b"\r\n")
            while end >= 0:
                line, self.pending = self.pending[:end], self.pending[end + 2 :]
                if line[3:4] != b"-":
                    return line
                end = self.pending.find(b"\r\n")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.pending += chunk

    def step(self, data: bytes, want: bytes) -> None:
        self.sock.sendall(data)
        line = self.reply()
        if not line.startswith(want):
            raise RuntimeError(f"expected {want.decode()} after {data[:20]!r}, got {line!r}")

    def close(self) -> None:
        self.sock.close()


def content(size: int) -> bytes:
    """A message of about ``size`` octets, dot-terminated, lines of 72 octets."""
    head = b"From: <a@example.org>\r\nTo: <b@example.com>\r\nSubject: phases\r\n\r\n"
    return head + b"x" * 70 + b"\r\n" + (b"y" * 70 + b"\r\n") * max(0, size // 72 - 1) + b".\r\n"


def session(port: int, message: bytes, timeout: float) -> list[float]:
    """One session; the duration of each step (``STEPS``) in seconds."""
    times = []
    t = time.perf_counter()
    s = Session(port, timeout)
    try:
        if not s.reply().startswith(b"220"):
            raise RuntimeError("no 220 greeting")
        times.append(time.perf_counter() - t)
        for data, want in (
            (b"EHLO phases.test\r\n", b"250"),
            (b"MAIL FROM:<a@example.org>\r\n", b"250"),
            (b"RCPT TO:<b@example.com>\r\n", b"250"),
            (b"DATA\r\n", b"354"),
            (message, b"250"),
            (b"QUIT\r\n", b"221"),
        ):
            t = time.perf_counter()
            s.step(data, want)
            times.append(time.perf_counter() - t)
    finally:
        s.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mta", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--label", default="mta")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    host, _, port = args.mta.rpartition(":")
    if host != "127.0.0.1":
        print("phases.py: loopback only (127.0.0.1:PORT)", file=sys.stderr)
        return 2
    message = content(args.size)
    runs = [session(int(port), message, args.timeout) for _ in range(args.count)]
    medians = {name: statistics.median(r[i] for r in runs) * 1e3 for i, name in enumerate(STEPS)}
    total = statistics.median(sum(r) for r in runs) * 1e3
    fields = " ".join(f"{name}={ms:.3f}" for name, ms in medians.items())
    print(f"phases label={args.label} size={args.size} k={args.count} {fields} total={total:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
