"""What the privileged helper costs: mbox deliveries in process against through the helper.

Run from the repository root: ``.venv/bin/python bench/service_helper.py [COUNT]``. Both
ends of the helper run in this process over a real socket pair (the fork and the drop
cost nothing per message); the content crosses a pipe, framed, as in the daemon. Prints
deliveries per second and the mean time per delivery for each way, 2 KB messages,
8 deliveries at once (the local agent's parallelism).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from mailwright.config.schema import Settings  # noqa: E402
from mailwright.delivery.deposit import DirectDeposit, Parcel  # noqa: E402
from mailwright.privhelper.client import HelperClient, HelperDeposit  # noqa: E402
from mailwright.privhelper.protocol import Channel  # noqa: E402
from mailwright.privhelper.server import HelperServer  # noqa: E402
from mailwright.routing.localusers import LocalUser  # noqa: E402

MESSAGE = b"From: a@x\r\nSubject: s\r\n\r\n" + b"line of text for the body\r\n" * 80  # ~2 KB
PARALLEL = 8


def parcel() -> Parcel:
    return Parcel("01JD3K7Q2M4XK9A", "a@x.test", "bench@mx.test", None, lambda: iter([MESSAGE]))


async def timed(deposit: object, users: list[LocalUser], count: int) -> float:
    gate = asyncio.Semaphore(PARALLEL)

    async def one(i: int) -> None:
        async with gate:
            problem = await deposit.mailbox(parcel(), users[i % len(users)])  # type: ignore[attr-defined]
            assert problem is None, problem

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - started


async def main(count: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="mw-bench-helper-"))
    try:
        (work / "mail").mkdir()
        names = [f"box{i}" for i in range(PARALLEL)]
        (work / "boxes").write_text("".join(f"{n} {n}\n" for n in names))
        settings = Settings.model_validate(
            {
                "queue": {"directory": str(work / "queue")},
                "local_delivery": {
                    "mail_spool": str(work / "mail"),
                    "virtual_mailbox_table": str(work / "boxes"),
                },
            }
        )
        ids = (os.getuid(), os.getgid())
        users = [
            LocalUser(n, *ids, "", "", work / "mail" / n, maildir=False, virtual=True)
            for n in names
        ]
        direct = await timed(DirectDeposit(), users, count)

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server = HelperServer(Channel(theirs), settings, None, ids)
        serving = asyncio.create_task(server.serve())
        client = HelperClient(ours, pid=-1)
        client.start()
        helped = await timed(HelperDeposit(client, 60, 60), users, count)
        ours.close()
        await serving
        for label, seconds in (("in process", direct), ("through the helper", helped)):
            print(
                f"{label:>20}: {count / seconds:8.0f} deliveries/s, "
                f"{seconds / count * 1000:6.2f} ms each ({count} x 2 KB mbox, {PARALLEL} at once)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
