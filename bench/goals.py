#!/usr/bin/env python3
"""Issue 14's goals, judged from the outputs of goals runs: one table, a verdict per goal.

Reads the files that ``bench/goals.sh`` leaves in each run's directory (``relay.txt``,
``accept.txt`` and ``e2e.txt``: the stdout and stderr of ``bench/relay.sh``,
``bench/accept.sh`` and ``bench/e2e.sh``; ``machine.txt``; with ``--scaling`` also
``relay-w1.txt`` and ``accept-w1.txt``, the same runs with one worker) and prints, in
Markdown, one column per run: Mailwright / Postfix = ratio of the medians, with each
repetition's own ratio in brackets (the servers take turns rep by rep, so the n-th runs of
both were measured side by side), and a last column that says in how many runs a goal was
met, with the spread of the ratios. The goals (issue 14): accepting and relaying at 10 and
50 sessions at least 1.5x Postfix's msgs/s; single-session latency and the end-to-end
latency of one relayed message (p50) no worse than Postfix's (ratio at most 1.0); a
worker's RSS flat while it accepts a 100 MiB message (growth under ``FLAT_MIB``).

The machine each run was on (``machine.txt``: its first line, boot time, CPU and kernel,
names the machine; its second says when) is printed above the table: a goal counts only
when it is met on at least two sessions' machines, so whether two runs shared a machine
matters. Ratios are judged as printed, to two decimals. Trusts the files to be those
scripts' output; a figure it cannot find is shown as ``-`` and makes its goal "not
measured" in that run. Reads no settings. Stdlib only.

Usage: bench/goals.py DIR [DIR ...]
"""

from __future__ import annotations

import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

THROUGHPUT_GOAL = 1.5
LATENCY_GOAL = 1.0
FLAT_MIB = 10.0  # RSS growth for a 100 MiB message: a tenth of it at most is "flat"

_RATE = re.compile(
    r"# (?P<kind>accept|relay) (?P<srv>mw|pf) n=(?P<n>\d+) size=(?P<size>\w+) "
    r"msgs_per_s=(?P<med>[\d.]+) runs=(?P<runs>[\d./]+)"
)
_LATENCY = re.compile(r"\| (?P<size>\d+k) \| (?P<mw>[\d.]+) \| (?P<pf>[\d.]+) \| [\d.]+ \|$")
_E2E_REP = re.compile(
    r"# rep=\d+ e2e_latency server=(?P<srv>mw|pf) size=(?P<size>\w+) .*?"
    r"e2e_p50_ms=(?P<p50>[\d.]+)"
)
_GROWTH = re.compile(r"\| growth: [^|]* \| (?P<mib>[\d.]+) \|")
_CPU_ROW = re.compile(r"\| (?P<size>\d+k) \| (?P<n>\d+) \|(?P<rest>.*)\|$")


@dataclass(frozen=True)
class Pair:
    """One figure of both servers: the medians and each repetition's figure."""

    mw: float
    pf: float
    mw_runs: tuple[float, ...] = ()
    pf_runs: tuple[float, ...] = ()

    @property
    def ratio(self) -> float:
        return divide(self.mw, self.pf)

    def rep_ratios(self) -> list[float]:
        return [divide(a, b) for a, b in zip(self.mw_runs, self.pf_runs, strict=False)]


@dataclass(frozen=True)
class Goal:
    key: str
    label: str
    at_least: bool  # True: the ratio must reach the bound; False: stay at or under it
    bound: float

    def met(self, value: float) -> bool:
        # judged as printed, to two decimals: the figures' own resolution
        value = round(value, 2)
        return value >= self.bound if self.at_least else value <= self.bound


def divide(a: float, b: float) -> float:
    """a / b, infinite for a zero b (a run that measured nothing must not end the report)."""
    return a / b if b else math.inf


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def rates(text: str, kind: str) -> dict[tuple[str, str], Pair]:
    """(sessions, size) -> msgs/s of both servers, from a relay.sh or accept.sh output."""
    found: dict[tuple[str, str, str], tuple[float, tuple[float, ...]]] = {}
    for m in _RATE.finditer(text):
        if m["kind"] == kind:
            runs = tuple(float(x) for x in m["runs"].split("/") if x)
            found[(m["srv"], m["n"], m["size"])] = (float(m["med"]), runs)
    out: dict[tuple[str, str], Pair] = {}
    for (srv, n, size), (med, runs) in found.items():
        other = found.get(("pf", n, size))
        if srv == "mw" and other is not None:
            out[(n, size)] = Pair(med, other[0], runs, other[1])
    return out


def latencies(text: str) -> dict[str, Pair]:
    """size -> single-session latency (ms per message) of both, from accept.sh's table."""
    out: dict[str, Pair] = {}
    for line in text.splitlines():
        m = _LATENCY.match(line.strip())
        if m:
            out[m["size"]] = Pair(float(m["mw"]), float(m["pf"]))
    return out


def end_to_end(text: str) -> dict[str, Pair]:
    """size -> the median over reps of each rep's e2e p50 (ms), from e2e.sh's output."""
    reps: dict[tuple[str, str], list[float]] = {}
    for m in _E2E_REP.finditer(text):
        reps.setdefault((m["srv"], m["size"]), []).append(float(m["p50"]))
    out: dict[str, Pair] = {}
    for (srv, size), mw_runs in reps.items():
        pf_runs = reps.get(("pf", size))
        if srv == "mw" and pf_runs:
            out[size] = Pair(
                statistics.median(mw_runs),
                statistics.median(pf_runs),
                tuple(mw_runs),
                tuple(pf_runs),
            )
    return out


def growth(text: str) -> float | None:
    m = _GROWTH.search(text)
    return float(m["mib"]) if m else None


def cpu_per_message(text: str) -> dict[tuple[str, str], Pair]:
    """(sessions, size) -> CPU ms per message of the whole machine, the table's last two."""
    out: dict[tuple[str, str], Pair] = {}
    for line in text.splitlines():
        m = _CPU_ROW.match(line.strip())
        if not m:
            continue
        cells = [c.strip() for c in m["rest"].split("|")]
        try:
            mw, pf = float(cells[-2]), float(cells[-1])
        except (ValueError, IndexError):
            continue
        out[(m["n"], m["size"])] = Pair(mw, pf)
    return out


@dataclass
class Run:
    name: str
    machine: str  # what identifies the machine: its boot, CPU and kernel
    when: str
    figures: dict[str, Pair]
    rss_growth: float | None
    cpu: dict[str, Pair]
    scaling: dict[str, tuple[Pair, Pair]]  # "kind n size" -> the runs with one worker, two


GOALS: list[Goal] = [
    *(
        Goal(
            f"{kind} {n} {size}",
            f"{kind}, {size.replace('k', ' KiB')}, {n} sessions",
            True,
            THROUGHPUT_GOAL,
        )
        for kind in ("accept", "relay")
        for size in ("1k", "100k")
        for n in ("10", "50")
    ),
    *(
        Goal(
            f"latency {size}",
            f"single-session latency, {size.replace('k', ' KiB')}",
            False,
            LATENCY_GOAL,
        )
        for size in ("1k", "100k")
    ),
    *(
        Goal(f"e2e {size}", f"end to end (p50), {size.replace('k', ' KiB')}", False, LATENCY_GOAL)
        for size in ("1k", "100k")
    ),
]


def load(directory: Path, name: str | None = None) -> Run:
    relay, accept = read(directory / "relay.txt"), read(directory / "accept.txt")
    figures: dict[str, Pair] = {}
    cpu: dict[str, Pair] = {}
    for kind, text in (("relay", relay), ("accept", accept)):
        for (n, size), pair in rates(text, kind).items():
            figures[f"{kind} {n} {size}"] = pair
        for (n, size), pair in cpu_per_message(text).items():
            cpu[f"{kind} {n} {size}"] = pair
    for size, pair in latencies(accept).items():
        figures[f"latency {size}"] = pair
    for size, pair in end_to_end(read(directory / "e2e.txt")).items():
        figures[f"e2e {size}"] = pair
    scaling: dict[str, tuple[Pair, Pair]] = {}
    for kind in ("relay", "accept"):
        one = rates(read(directory / f"{kind}-w1.txt"), kind)
        for (n, size), pair in one.items():
            two = figures.get(f"{kind} {n} {size}")
            if two is not None:
                scaling[f"{kind} {n} {size}"] = (pair, two)
    identity, _, when = read(directory / "machine.txt").partition("\n")
    machine = " ".join(identity.split()) or "unknown"
    return Run(
        name or directory.name,
        machine,
        " ".join(when.split()),
        figures,
        growth(accept),
        cpu,
        scaling,
    )


def cell(pair: Pair | None) -> str:
    if pair is None:
        return "-"
    reps = ", ".join(f"{r:.2f}" for r in pair.rep_ratios())
    text = f"{pair.mw:g} / {pair.pf:g} = {pair.ratio:.2f}"
    return f"{text} ({reps})" if reps else text


def verdict(goal: Goal, runs: list[Run]) -> str:
    ratios = [r.figures[goal.key].ratio for r in runs if goal.key in r.figures]
    if not ratios:
        return "not measured"
    met = sum(goal.met(x) for x in ratios)
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"
    word = "met" if met == len(ratios) else "not met"
    return f"{word}: {met} of {len(ratios)} runs ({spread})"


def report(runs: list[Run]) -> str:
    lines = ["## Issue 14's goals, Mailwright / Postfix (each run's medians, reps in brackets)"]
    lines.append("")
    lines += [f"- run {r.name}: {r.machine}{'; ' + r.when if r.when else ''}" for r in runs]
    machines = {r.machine for r in runs}
    lines += [f"- machines: {len(machines)} different among {len(runs)} runs", ""]
    lines.append("| goal | bound | " + " | ".join(r.name for r in runs) + " | verdict |")
    lines.append("|---|---|" + "---|" * len(runs) + "---|")
    for goal in GOALS:
        bound = f"{'>=' if goal.at_least else '<='} {goal.bound:g}"
        cells = " | ".join(cell(r.figures.get(goal.key)) for r in runs)
        lines.append(f"| {goal.label} | {bound} | {cells} | {verdict(goal, runs)} |")
    grown = [r.rss_growth for r in runs]
    rss_cells = " | ".join("-" if g is None else f"+{g:g} MiB" for g in grown)
    flat = [g for g in grown if g is not None]
    rss_verdict = (
        f"{'met' if all(g < FLAT_MIB for g in flat) else 'not met'}: {len(flat)} runs"
        if flat
        else "not measured"
    )
    lines.append(
        f"| RSS growth, 100 MiB message | < {FLAT_MIB:g} MiB | {rss_cells} | {rss_verdict} |"
    )
    lines += ["", "CPU ms per message of the whole machine, Mailwright / Postfix:", ""]
    lines.append("| work | " + " | ".join(r.name for r in runs) + " |")
    lines.append("|---|" + "---|" * len(runs))
    for key in sorted({k for r in runs for k in r.cpu}):
        cells = " | ".join(
            f"{r.cpu[key].mw:g} / {r.cpu[key].pf:g}" if key in r.cpu else "-" for r in runs
        )
        lines.append(f"| {key} | {cells} |")
    if any(r.scaling for r in runs):
        lines += [
            "",
            "Scaling: Mailwright's msgs/s with one worker, then two (each against "
            "Postfix in its own run), and what the second worker gives:",
            "",
        ]
        lines.append("| work | " + " | ".join(r.name for r in runs) + " |")
        lines.append("|---|" + "---|" * len(runs))
        for key in sorted({k for r in runs for k in r.scaling}):
            cells = " | ".join(scaling_cell(r.scaling.get(key)) for r in runs)
            lines.append(f"| {key} | {cells} |")
    return "\n".join(lines)


def scaling_cell(runs: tuple[Pair, Pair] | None) -> str:
    if runs is None:
        return "-"
    one, two = runs
    gain = divide(two.mw, one.mw)
    return f"{one.mw:g} ({one.ratio:.2f}x), {two.mw:g} ({two.ratio:.2f}x): {gain:.2f}x"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    paths = [Path(a) for a in argv]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        print(f"goals.py: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(report([load(path, name) for path, name in zip(paths, run_names(paths), strict=True)]))
    return 0


def run_names(paths: list[Path]) -> list[str]:
    """Each run's directory name, with its parent's when two runs share a name (the runs
    of different sessions, say 2026-12-07/a and 2026-12-09/a)."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.name}" for p in paths]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
