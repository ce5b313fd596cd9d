"""bench/goals.py judges issue 14's goals from the benchmark scripts' own output.

The texts below are shaped as bench/relay.sh, bench/accept.sh and bench/e2e.sh print them
(lines copied from real runs, trimmed); the verdicts must follow the figures, a missing
figure must read "not measured", and runs on one boot must count as one machine.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def goals() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_goals", ROOT / "bench" / "goals.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


RELAY = """\
# relay.sh mailwright=127.0.0.1:43361 postfix=127.0.0.1:34877 m=2000 reps=3 cpus=2
# run relay mw n=10 size=1k rep=1 msgs_per_s=1480.1
# relay mw n=10 size=1k msgs_per_s=1440.7 runs=1480.1/1440.7/1233.1
# relay pf n=10 size=1k msgs_per_s=678.2 runs=738.6/678.2/583.5
# relay mw n=10 size=100k msgs_per_s={mw100} runs={mw100}/{mw100}/{mw100}
# relay pf n=10 size=100k msgs_per_s=459.0 runs=332.5/459.0/485.1
## Mailwright vs Postfix: relay benchmark (2026-12-07T04:02Z, 2 CPUs, m=2000, median of 3)

| size | sessions | MW msgs/s | PF msgs/s | ratio | accept MW | accept PF | CPU MW | CPU PF |
|---|---|---|---|---|---|---|---|---|
| 1k | 10 | 1440.7 | 678.2 | 2.12 | 1468.3 | 821.5 | 1.34 | 2.86 |
| 100k | 10 | {mw100} | 459.0 | 1.79 | 833.1 | 479.3 | 2.35 | 4.24 |
"""

ACCEPT = """\
# accept mw n=10 size=1k msgs_per_s=2021.6 runs=2191.8/2021.6/1830.8
# accept pf n=10 size=1k msgs_per_s=896.8 runs=1025.4/788.3/896.8
| size | sessions | MW msgs/s | PF msgs/s | ratio MW/PF | CPU ms/msg MW | CPU ms/msg PF |
|---|---|---|---|---|---|---|
| 1k | 10 | 2021.6 | 896.8 | 2.25 | 0.94 | 2.13 |

| single session latency (ms/msg, new connection each) | Mailwright | Postfix | ratio MW/PF |
|---|---|---|---|
| 1k | 1.192 | 1.404 | 0.85 |
| 100k | 2.100 | 1.972 | 1.06 |

| Mailwright memory: worker mailwright-w0 (pid 1645) of 2 | MiB |
|---|---|
| growth: peak during 100m - RSS after 1 KiB | 2.8 |
"""

E2E = """\
# rep=1 e2e_latency server=mw size=1k k=200 accept_p50_ms=1.80 e2e_p50_ms=1.84 lost=0
# rep=1 e2e_latency server=pf size=1k k=200 accept_p50_ms=1.45 e2e_p50_ms=1.94 lost=0
# rep=2 e2e_latency server=mw size=1k k=200 accept_p50_ms=1.60 e2e_p50_ms=1.76 lost=0
# rep=2 e2e_latency server=pf size=1k k=200 accept_p50_ms=1.47 e2e_p50_ms=1.90 lost=0
# rep=3 e2e_latency server=mw size=1k k=200 accept_p50_ms=1.64 e2e_p50_ms=2.10 lost=0
# rep=3 e2e_latency server=pf size=1k k=200 accept_p50_ms=1.32 e2e_p50_ms=1.86 lost=0
"""


def make_run(
    base: Path, name: str, *, mw100: str = "823.7", machine: str = "booted X", e2e: bool = True
) -> Path:
    run = base / name
    run.mkdir()
    (run / "relay.txt").write_text(RELAY.format(mw100=mw100))
    (run / "accept.txt").write_text(ACCEPT)
    if e2e:
        (run / "e2e.txt").write_text(E2E)
    (run / "machine.txt").write_text(machine + "\n")
    return run


def row(report: str, label: str) -> str:
    lines = [line for line in report.splitlines() if line.startswith(f"| {label} |")]
    assert len(lines) == 1, (label, report)
    return lines[0]


def test_one_run_figures_and_verdicts(goals: ModuleType, tmp_path: Path) -> None:
    report = goals.report([goals.load(make_run(tmp_path, "a"))])
    relay = row(report, "relay, 1 KiB, 10 sessions")
    # the medians' ratio, then each rep's, paired in the order the servers took turns
    assert "1440.7 / 678.2 = 2.12 (2.00, 2.12, 2.11)" in relay
    assert relay.endswith("| met: 1 of 1 runs (2.12) |")
    assert row(report, "single-session latency, 1 KiB").endswith("| met: 1 of 1 runs (0.85) |")
    assert row(report, "single-session latency, 100 KiB").endswith(
        "| not met: 0 of 1 runs (1.06) |"
    )
    # end to end: the median of the reps' p50, both servers (1.84 against 1.90)
    e2e = row(report, "end to end (p50), 1 KiB")
    assert "1.84 / 1.9 = 0.97 (0.95, 0.93, 1.13)" in e2e
    assert e2e.endswith("| met: 1 of 1 runs (0.97) |")
    assert row(report, "end to end (p50), 100 KiB").endswith("| - | not measured |")
    assert row(report, "relay, 1 KiB, 50 sessions").endswith("| - | not measured |")
    assert row(report, "RSS growth, 100 MiB message").endswith("| +2.8 MiB | met: 1 runs |")
    assert "| relay 10 100k | 2.35 / 4.24 |" in report
    assert "- machines: 1 different among 1 runs" in report


def test_runs_judged_together(goals: ModuleType, tmp_path: Path) -> None:
    runs = [
        goals.load(make_run(tmp_path, "a", machine="booted 1")),
        goals.load(make_run(tmp_path, "b", mw100="600.0", machine="booted 1", e2e=False)),
        goals.load(make_run(tmp_path, "c", machine="booted 2")),
    ]
    report = goals.report(runs)
    # 600 / 459 = 1.31 in run b: the goal is not met over the three runs
    assert row(report, "relay, 100 KiB, 10 sessions").endswith(
        "| not met: 2 of 3 runs (1.31-1.79) |"
    )
    assert row(report, "end to end (p50), 1 KiB").endswith("| met: 2 of 2 runs (0.97-0.97) |")
    assert "- machines: 2 different among 3 runs" in report


def test_scaling_from_one_worker_runs(goals: ModuleType, tmp_path: Path) -> None:
    run = make_run(tmp_path, "a")
    (run / "relay-w1.txt").write_text(
        "# relay mw n=10 size=1k msgs_per_s=800.0 runs=800.0/800.0/800.0\n"
        "# relay pf n=10 size=1k msgs_per_s=700.0 runs=700.0/700.0/700.0\n"
    )
    report = goals.report([goals.load(run)])
    # one worker at 800 msgs/s (1.14x its run's Postfix), two at 1440.7 (2.12x): 1.80x
    assert "| relay 10 1k | 800 (1.14x), 1440.7 (2.12x): 1.80x |" in report


def test_command_line(
    goals: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert goals.main([str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert goals.main([str(make_run(tmp_path, "a"))]) == 0
    assert "| relay, 1 KiB, 10 sessions |" in capsys.readouterr().out


def test_ratios_judged_as_printed(goals: ModuleType) -> None:
    # 4.32 ms against 4.30 prints as 1.00: no worse, at the figures' resolution
    latency = goals.Goal("e2e 100k", "end to end", False, 1.0)
    assert latency.met(4.32 / 4.30)
    assert not latency.met(4.35 / 4.30)  # 1.01
    throughput = goals.Goal("relay 10 1k", "relay", True, 1.5)
    assert throughput.met(1.496) and not throughput.met(1.494)
    # a server that measured nothing (0 msgs/s) gives an infinite ratio, not a traceback
    assert goals.Pair(700.0, 0.0).ratio == float("inf")


def test_runs_of_two_sessions_named_apart(
    goals: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "day1").mkdir()
    (tmp_path / "day2").mkdir()
    one = make_run(tmp_path / "day1", "a", machine="booted 1")
    two = make_run(tmp_path / "day2", "a", machine="booted 2")
    assert goals.main([str(one), str(two)]) == 0
    out = capsys.readouterr().out
    assert "| goal | bound | day1/a | day2/a | verdict |" in out
    assert "- machines: 2 different among 2 runs" in out
