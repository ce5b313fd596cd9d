"""Throughput of the SMTP delivery agent: N messages of 1 KiB to Postfix's smtp-sink over C
parallel, reused connections. Usage (from the repository root, as root or not):

    /work/main/.venv/bin/python bench/t03_smtp_client.py [--messages 2000] [--concurrency 10]
        [--size 1024] [--uvloop]

Prints messages/s and the sink's own counters (which must show every message).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "src"),
]

from tests.support.delivery_request import request, smtp_hop  # noqa: E402
from tests.support.smtp_sink import SmtpSink  # noqa: E402

from mailwright.delivery.smtp import SmtpAgent  # noqa: E402


def message(size: int) -> bytes:
    head = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: bench\r\nMessage-ID: <b@x.test>\r\n\r\n"
    line = b"x" * 62 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    return head + body + b"y" * (size - len(head) - len(body) - 2) + b"\r\n"


async def run(port: int, total: int, concurrency: int, size: int) -> float:
    agent = SmtpAgent("bench.test", None, max_idle=concurrency)
    hop = smtp_hop("127.0.0.1", port)
    msg = message(size)
    failures = 0

    async def worker(count: int) -> None:
        nonlocal failures
        for _ in range(count):
            results = await agent.deliver(request(hop, "b@y.test", message=msg))
            failures += sum(r.outcome.value != "delivered" for r in results)

    started = time.perf_counter()
    share = [total // concurrency + (i < total % concurrency) for i in range(concurrency)]
    await asyncio.gather(*(worker(n) for n in share))
    elapsed = time.perf_counter() - started
    print(f"sessions reused {agent.pool.reused} times; failures {failures}")
    await agent.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    # no dump files: measure the client, not the sink's disk
    with tempfile.TemporaryDirectory() as tmp, SmtpSink(Path(tmp), dump=False) as sink:
        coro = run(sink.port, args.messages, args.concurrency, args.size)
        if args.uvloop:
            import uvloop

            elapsed = uvloop.run(coro)
        else:
            elapsed = asyncio.run(coro)
        deadline = time.monotonic() + 10
        while sink.counters().get("quit") != args.concurrency and time.monotonic() < deadline:
            time.sleep(0.01)  # the sink prints its counters a moment after the last QUIT
        print(f"sink counters: {sink.counters()}")
    rate = args.messages / elapsed
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"{args.messages} x {args.size} B, concurrency {args.concurrency}, {loop}: "
        f"{elapsed:.2f} s, {rate:.0f} messages/s"
    )


if __name__ == "__main__":
    main()
