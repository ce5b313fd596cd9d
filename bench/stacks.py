"""Summarise py-spy's collapsed stacks (``--format raw``): top functions per thread.

Each input line is ``frame;frame;...;leaf COUNT`` (with ``--threads`` the first frame
names the thread; with ``--subprocesses`` the processes come first, outermost first, and
a sample counts for the innermost one's thread). Prints, for each thread, the share of
samples per function by own time (leaf) and including callees (anywhere in the stack,
counted once per sample).
Trusts its input to be py-spy output. Reads no settings.

Usage: python bench/stacks.py STACKS [--top N]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

_LINE = re.compile(r"^(.*) (\d+)$")
_LINENO = re.compile(r":\d+\)$")
_PROCESS = re.compile(r"^(process \d+):.*$")  # its command line is long and the same for all


def frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (file.py)``: merge the lines of one function."""
    name = _LINENO.sub(")", frame.strip())
    return re.sub(r"\(.*/", "(", name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stacks")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    own: dict[str, Counter[str]] = defaultdict(Counter)
    total: dict[str, Counter[str]] = defaultdict(Counter)
    samples: Counter[str] = Counter()
    with open(args.stacks, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            frames = m.group(1).split(";")
            count = int(m.group(2))
            # with --subprocesses the stack starts with the processes, parent first
            procs = 0
            while procs < len(frames) and frames[procs].startswith("process "):
                procs += 1
            label = _PROCESS.sub(r"\1", frames[procs - 1]) + " " if procs else ""
            first = frames[procs] if procs < len(frames) else ""
            thread = label + first if first.startswith("thread") else label + "all"
            rest = frames[procs + 1 :] if first.startswith("thread") else frames[procs:]
            names = [frame_name(fr) for fr in rest if fr]
            if not names:
                continue
            samples[thread] += count
            own[thread][names[-1]] += count
            for name in set(names):
                total[thread][name] += count
    for thread, n in samples.most_common():
        print(f"\n== {thread}: {n} samples")
        print("-- own time")
        for name, c in own[thread].most_common(args.top):
            print(f"{100 * c / n:6.1f}%  {name}")
        print("-- including callees")
        for name, c in total[thread].most_common(args.top):
            print(f"{100 * c / n:6.1f}%  {name}")


if __name__ == "__main__":
    main()
