"""Latency of each step of one SMTP session, as a client without pipelining sees it.

Opens ``--count`` sessions one after another to ``--mta`` (a new connection each) and
times, for each: connecting until the greeting, then every command until its reply
(EHLO, MAIL, RCPT, DATA), the content until the 250 that accepts it, and QUIT until the
221. With ``--counter-file`` (the output of the ``smtp-sink -c`` the server relays to) it
also waits, after each session, until the sink has counted the message (polling every 0.2
ms) and times that: ``arrival`` from the 221 until then, ``e2e`` from the connection until
then (as ``e2e_probe.py`` measures end to end). Prints one machine-readable line with the
median of each step in ms:

  phases label=mw size=1024 k=300 connect=0.35 ehlo=0.16 mail=0.20 rcpt=0.18 data=0.15
         body=1.10 quit=0.29 total=2.57   (one line)

A step that is slow against another server's shows where the time of a session goes
(``bench/phases.sh`` runs it against Mailwright and Postfix side by side). A raw socket,
stdlib only: nothing in the client varies with the server. Talks to 127.0.0.1 only; every
read has a timeout. Trusts the server to speak SMTP (anything else ends the probe with an
error). Reads no settings.

Usage: python3 bench/phases.py --mta 127.0.0.1:2525 [--count 300] [--size 1024] [--label mw]
                              [--counter-file SINK_OUTPUT]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time

STEPS = ("connect", "ehlo", "mail", "rcpt", "data", "body", "quit")
POLL = 0.0002  # seconds between looks at the sink's counter


class SinkCounter:
    """The message count of a running ``smtp-sink -c``: it writes CR-separated records
    (``sess=.. quit=.. mesg=N``) to its output, which this follows."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 - read for the probe's whole life
        self.partial = b""
        self.count = 0
        self.read()

    def read(self) -> int:
        data = self.file.read()
        if data:
            records = (self.partial + data).split(b"\r")
            self.partial = records.pop()
            for record in reversed(records):
                at = record.rfind(b"mesg=")
                if at >= 0:
                    self.count = int(record[at + 5 :].split()[0])
                    break
        return self.count

    def wait_beyond(self, count: int, timeout: float) -> None:
        """Until the sink has counted more than ``count`` messages."""
        end = time.perf_counter() + timeout
        while self.read() <= count:
            if time.perf_counter() > end:
                raise TimeoutError(f"the sink did not count message {count + 1}")
            time.sleep(POLL)


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


def session(
    port: int, message: bytes, timeout: float, sink: SinkCounter | None = None
) -> list[float]:
    """One session; the duration of each step (``STEPS``) in seconds, then with ``sink``
    the time from the 221 until the sink has the message and from the start until then."""
    times = []
    before = sink.read() if sink else 0
    start = t = time.perf_counter()
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
    if sink is not None:
        quit_done = t + times[-1]
        sink.wait_beyond(before, timeout)
        arrived = time.perf_counter()
        times += [arrived - quit_done, arrived - start]
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mta", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--label", default="mta")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--counter-file", help="the output of the smtp-sink -c relayed to")
    args = parser.parse_args()
    host, _, port = args.mta.rpartition(":")
    if host != "127.0.0.1":
        print("phases.py: loopback only (127.0.0.1:PORT)", file=sys.stderr)
        return 2
    message = content(args.size)
    sink = SinkCounter(args.counter_file) if args.counter_file else None
    runs = [session(int(port), message, args.timeout, sink) for _ in range(args.count)]
    medians = {name: statistics.median(r[i] for r in runs) * 1e3 for i, name in enumerate(STEPS)}
    total = statistics.median(sum(r[: len(STEPS)]) for r in runs) * 1e3
    fields = " ".join(f"{name}={ms:.3f}" for name, ms in medians.items())
    line = f"phases label={args.label} size={args.size} k={args.count} {fields} total={total:.3f}"
    if sink is not None:
        arrival, e2e = (statistics.median(r[i] for r in runs) * 1e3 for i in (-2, -1))
        line += f" arrival={arrival:.3f} e2e={e2e:.3f}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
