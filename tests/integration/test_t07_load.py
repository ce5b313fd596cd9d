"""Load test: 500 hostile connections at once from loopback for a minute, while a legitimate
client keeps sending mail; every legitimate message must be accepted promptly and the daemon's
memory must stay bounded.

The 500 come from 25 loopback addresses (127.0.1.1-25), 20 each (the per-address limit);
each address also keeps trying to open more, which are refused with 421. Of the 500: idle
clients (dropped at the command deadline, then back), slowloris clients (a byte a second),
junk senders (bad commands and NOOP floods until 421), and AUTH guessers (STARTTLS, then
wrong passwords). Marked ``slow``: ``make test`` runs it; ``pytest -m "not slow"`` skips it.
The figures are printed (``pytest -s``) and written to ``load.json`` in the test directory.
``MAILWRIGHT_LOAD_SECONDS`` changes the duration (default 60).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from mailwright.policy.auth import hash_password, write_users
from tests.support.daemon import Mailwright
from tests.support.security import certificate, plain

ATTACKERS = 500
ADDRESSES = 25  # x 20 connections each = the per-address limit
DURATION = float(os.environ.get("MAILWRIGHT_LOAD_SECONDS", "60"))
MESSAGE = b"From: a@x.test\r\nTo: postmaster@mx.test\r\nSubject: load\r\n\r\n" + b"line\r\n" * 50


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Attack:
    def __init__(self, port: int, deadline: float, tls: ssl.SSLContext) -> None:
        self.port = port
        self.deadline = deadline
        self.tls = tls
        self.stats: Counter[str] = Counter()

    async def connect(self, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))

    async def run(self, kind: str, source: str) -> None:
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await self.connect(source)
            except OSError:
                self.stats["connect failed"] += 1
                continue
            self.stats["connections"] += 1
            try:
                greeting = await reader.readline()
                if not greeting.startswith(b"220"):
                    self.stats[f"refused {greeting[:3].decode()}"] += 1
                    await asyncio.sleep(0.05)  # a refused client tries again soon
                    continue
                await getattr(self, kind)(reader, writer)
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
                self.stats[f"{kind} cut"] += 1
            finally:
                writer.close()

    async def _until_closed(self, reader: asyncio.StreamReader) -> bytes:
        last = b""
        while line := await reader.readline():
            last = line
        return last

    async def idle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        last = await self._until_closed(reader)
        self.stats[f"idle closed {last[:9].decode()}"] += 1

    async def slowloris(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        closed = asyncio.ensure_future(self._until_closed(reader))
        for byte in b"EHLO " + b"s" * 1000:
            writer.write(bytes([byte]))
            done, _ = await asyncio.wait([closed], timeout=1.0)
            if done:
                break
        last = await closed
        self.stats[f"slowloris closed {last[:9].decode()}"] += 1

    async def junk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"EHLO junk.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(b"NOOP\r\n" * 60 + b"BOGUS\r\n" * 30 + b"RSET\r\n" * 60)
        last = await self._until_closed(reader)
        self.stats[f"junk closed {last[:9].decode()}"] += 1

    async def guess(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"EHLO guess.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(b"STARTTLS\r\n")
        await reader.readline()
        await writer.start_tls(self.tls)
        writer.write(b"EHLO guess.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        for n in range(10):
            writer.write(f"AUTH PLAIN {plain('alice', f'guess{n}')}\r\n".encode())
            reply = await reader.readline()
            self.stats[f"guess {reply[:3].decode()}"] += 1
            if not reply.startswith(b"535"):
                break


async def legitimate(port: int, deadline: float) -> list[float]:
    """Messages one after another; the seconds each took, connect to 250."""
    latencies: list[float] = []
    while time.monotonic() < deadline:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def reply(reader: asyncio.StreamReader = reader) -> bytes:
            while (line := await reader.readline())[3:4] == b"-":
                pass
            return line

        assert (await reply()).startswith(b"220")
        for command in (
            b"EHLO good.test",
            b"MAIL FROM:<a@x.test>",
            b"RCPT TO:<postmaster@mx.test>",
        ):
            writer.write(command + b"\r\n")
            assert (await reply()).startswith(b"250"), command
        writer.write(b"DATA\r\n")
        assert (await reply()).startswith(b"354")
        writer.write(MESSAGE + b".\r\n")
        final = await reply()
        assert final.startswith(b"250 2.0.0"), final
        writer.write(b"QUIT\r\n")
        await reply()
        writer.close()
        latencies.append(time.monotonic() - started)
    return latencies


@pytest.mark.slow
def test_500_hostile_connections_legitimate_mail_still_served(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path / "tls")
    users = tmp_path / "users"
    write_users(users, {"alice": hash_password("the real one", rounds=10).encode()})
    mw = Mailwright(
        tmp_path / "mw",
        {
            "relay": {"networks": []},
            "routing": {"local_domains": ["mx.test"]},
            "tls": {"certificate": str(cert), "key": str(key)},
            "auth": {"users_file": str(users), "failure_delay": 0.5, "max_failure_delay": 4},
            "server": {
                "max_connections": 700,
                "max_connections_per_ip": 20,
                "timeouts": {"command": 20, "shutdown_grace": 5},
            },
        },
    ).start()
    try:
        assert mw.proc is not None
        pid = mw.proc.pid
        figures = asyncio.run(run_load(mw.port, pid))
    finally:
        mw.stop()
    (tmp_path / "load.json").write_text(json.dumps(figures, indent=2))
    print("\nload test figures:", json.dumps(figures, indent=2))
    assert figures["legitimate_messages"] >= 20
    assert figures["legitimate_latency_max_s"] < 5
    assert figures["attack"]["connections"] >= ATTACKERS
    assert figures["attack_refused_421"] > 0  # the per-address limit held
    assert figures["rss_peak_mib"] - figures["rss_start_mib"] < 150  # bounded memory


async def run_load(port: int, pid: int) -> dict[str, object]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    rss_start = rss_kib(pid)
    cpu_start = cpu_seconds(pid)
    deadline = time.monotonic() + DURATION
    attack = Attack(port, deadline, context)
    kinds = ["idle"] * 8 + ["slowloris"] * 6 + ["junk"] * 4 + ["guess"] * 2
    tasks = []
    for i in range(ATTACKERS):
        source = f"127.0.1.{i % ADDRESSES + 1}"
        tasks.append(asyncio.create_task(attack.run(kinds[i % len(kinds)], source)))
    for i in range(ADDRESSES):  # beyond the limit: refused
        tasks.append(asyncio.create_task(attack.run("idle", f"127.0.1.{i + 1}")))
    samples: list[int] = []

    async def sample() -> None:
        while time.monotonic() < deadline:
            samples.append(rss_kib(pid))
            await asyncio.sleep(1)  # the sampling period, not synchronisation

    sampler = asyncio.create_task(sample())
    await asyncio.sleep(2)  # let the 500 connect before measuring the legitimate client
    latencies = await legitimate(port, deadline)
    await sampler
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu = cpu_seconds(pid) - cpu_start
    ordered = sorted(latencies)
    return {
        "duration_s": DURATION,
        "attack_connections_at_once": ATTACKERS,
        "legitimate_messages": len(latencies),
        "legitimate_latency_median_s": round(statistics.median(ordered), 4),
        "legitimate_latency_p95_s": round(ordered[int(len(ordered) * 0.95) - 1], 4),
        "legitimate_latency_max_s": round(ordered[-1], 4),
        "attack_refused_421": attack.stats["refused 421"],
        "attack": dict(attack.stats),
        "rss_start_mib": round(rss_start / 1024, 1),
        "rss_peak_mib": round(max(samples) / 1024, 1),
        "rss_end_mib": round(samples[-1] / 1024, 1),
        "daemon_cpu_s": round(cpu, 1),
    }
