"""Local delivery figures: the alias table (build, load, lookup), mbox appends, the local agent.

Run from the repository root: ``.venv/bin/python bench/local_delivery.py``. As root it
also times a Maildir delivery as another user (through the user-writer child process).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.support.delivery_request import request  # noqa: E402
from tests.support.localusers import StaticUsers  # noqa: E402

from mailwright.core.delivery import DeliveryRecipient  # noqa: E402
from mailwright.core.target import Mailer, Target  # noqa: E402
from mailwright.delivery.local import LocalAgent  # noqa: E402
from mailwright.delivery.mbox import MboxOptions, append, mbox_message  # noqa: E402
from mailwright.routing.aliases import AliasTable, compile_aliases  # noqa: E402
from mailwright.routing.nexthop import NextHop, Transport  # noqa: E402

MESSAGE = b"From: a@x\r\nSubject: s\r\n\r\n" + b"line of text for the body\r\n" * 80  # ~2 KB


def aliases(work: Path) -> None:
    source = work / "aliases"
    with source.open("w") as f:
        for i in range(100_000):
            f.write(f"user{i}: person{i}@example.org, local{i}\n")
    started = time.monotonic()
    compile_aliases(source, work / "aliases.db")
    built = time.monotonic() - started
    started = time.monotonic()
    table = AliasTable(work / "aliases.db")
    table.lookup("user5")
    opened = time.monotonic() - started
    started = time.monotonic()
    for i in range(10_000):
        table.lookup(f"user{i * 7 % 100_000}")
    lookup = (time.monotonic() - started) / 10_000
    size = source.stat().st_size / 1e6
    print(
        f"100k aliases ({size:.1f} MB): build {built:.2f} s, open + first lookup"
        f" {opened * 1000:.1f} ms, one lookup {lookup * 1e6:.0f} us"
    )


def mbox_appends(work: Path, count: int = 500) -> None:
    box = work / "mbox"
    started = time.monotonic()
    for _ in range(count):
        append(box, mbox_message(b"", [MESSAGE], "a@x"), MboxOptions())
    elapsed = time.monotonic() - started
    print(f"mbox append, 2 KB, fsync each: {count / elapsed:.0f} msg/s")


def agent_delivery(agent: LocalAgent, recipient: DeliveryRecipient, count: int) -> float:
    async def go() -> float:
        started = time.monotonic()
        for _ in range(count):
            (result,) = await agent.deliver(
                request(NextHop(Transport.LOCAL), recipient, message=MESSAGE)
            )
            assert result.outcome.value == "delivered", result.reply
        return (time.monotonic() - started) / count

    return asyncio.run(go())


def local_agent(work: Path) -> None:
    users = StaticUsers(work, ["alice"])
    users.add("md", uid=65534, gid=65534, maildir=True)
    (work / "mail").chmod(0o755)
    agent = LocalAgent(users)
    alice = DeliveryRecipient(0, "alice@mx.test", target=Target(Mailer.LOCAL, "alice"))
    print(f"local agent, mbox: {agent_delivery(agent, alice, 200) * 1000:.2f} ms each")
    if os.geteuid() == 0:
        md = DeliveryRecipient(0, "md@mx.test", target=Target(Mailer.LOCAL, "md"))
        each = agent_delivery(agent, md, 30)
        print(f"local agent, Maildir as another user (child writer): {each * 1000:.1f} ms each")
    prog = DeliveryRecipient(0, "l@mx.test", target=Target(Mailer.PROG, "cat > /dev/null"))
    each = agent_delivery(agent, prog, 50)
    print(f"local agent, program 'cat > /dev/null': {each * 1000:.1f} ms each")


def main() -> None:
    work = Path(tempfile.mkdtemp(dir="/tmp"))
    work.chmod(0o755)
    try:
        aliases(work)
        mbox_appends(work)
        local_agent(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
