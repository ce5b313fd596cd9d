"""The listener's admission bookkeeping (issue 14): ns per connection of admit + open + close.

Drives ``Edge._handle`` for one client address over and over, in one asyncio task, with
a session that ends at once and a writer that only answers ``get_extra_info``: what is
left is the admission check, the session's ``SessionInfo`` and the per-address and total
counts, opened and closed. ``--share N`` counts in the memory shared by N workers
(``policy.sharedlimits``; this tree only), else in the process (one worker, as before
issue 14). ``--old DIR`` also runs the code in ``DIR/src`` (e.g. ``git archive HEAD src |
tar -x -C DIR``); trees take turns within each repetition, so drift on a shared machine
hits both alike. Prints the median of ``-r`` repetitions of ``-n`` connections.

Usage (from the repository root):
    /work/main/.venv/bin/python bench/edge_admission.py [-n 200000] [-r 7] [--old DIR]
        [--share 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def one_run(count: int, workers: int) -> float:
    """ns per connection, in this process (run with the tree to measure on sys.path)."""
    from mailwright.config.schema import Listener, Settings
    from mailwright.edge import listener as module

    class Session:
        def __init__(self, *args: Any) -> None:
            pass

        async def run(self) -> None:
            return None

    class Writer:
        extra = {"peername": ("192.0.2.1", 40000), "sockname": ("192.0.2.25", 25)}

        def get_extra_info(self, name: str) -> Any:
            return self.extra.get(name)

    module.Session = Session  # type: ignore[misc,assignment]
    settings = Settings()
    ctx = SimpleNamespace(settings=settings)
    if workers:
        from mailwright.policy.sharedlimits import SharedState

        share = SharedState.create(workers).worker(0)
        edge = module.Edge(ctx, share=share)  # type: ignore[call-arg,arg-type]
    else:
        edge = module.Edge(ctx)  # type: ignore[arg-type]
    listener = Listener()
    writer = Writer()

    async def main() -> float:
        handle = edge._handle
        start = time.perf_counter_ns()
        for _ in range(count):
            await handle(listener, None, writer)  # type: ignore[arg-type]
        return (time.perf_counter_ns() - start) / count

    return asyncio.run(main())


def measure(src: Path, count: int, workers: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, __file__, "--child", "-n", str(count), "--share", str(workers)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("-r", type=int, default=7)
    parser.add_argument("--old", type=Path)
    parser.add_argument("--share", type=int, default=0)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(one_run(args.n, args.share))
        return
    trees = {"this tree": Path(__file__).resolve().parent.parent / "src"}
    if args.old is not None:
        trees["old tree"] = args.old / "src"
    runs: dict[str, list[float]] = {name: [] for name in trees}
    shared: list[float] = []
    for _ in range(args.r):
        for name, src in trees.items():
            runs[name].append(measure(src, args.n, 0))
        if args.share:
            shared.append(measure(trees["this tree"], args.n, args.share))
    print("| code | ns per connection (median) |\n|---|---|")
    for name, values in runs.items():
        print(f"| {name}, one process | {statistics.median(values):.0f} |")
    if shared:
        print(f"| this tree, {args.share} workers sharing | {statistics.median(shared):.0f} |")


if __name__ == "__main__":
    main()
