#!/usr/bin/env bash
# bench/goals.sh - one run of issue 14's goals against Postfix, and the verdict per goal.
#
# Runs, one after the other, bench/relay.sh, bench/accept.sh and bench/e2e.sh with the same
# repetitions (the servers take turns within each), keeps each script's stdout and stderr in
# OUT/relay.txt, OUT/accept.txt and OUT/e2e.txt, what machine this is in OUT/machine.txt
# (its boot time, CPU and kernel: two runs on one boot are one machine), and prints
# bench/goals.py's table for this run. With --scaling also relay.sh and accept.sh with one
# worker (MW_WORKERS=1, throughput only: OUT/relay-w1.txt, OUT/accept-w1.txt). A whole run
# takes about 6 minutes on 2 CPUs (--scaling: about 10); run it with nothing else busy.
# Several runs, e.g. of different days, are judged together with
#   bench/goals.py OUT1 OUT2 ...
#
# Usage: bench/goals.sh [options]
#   -r REPS          repetitions in each script, default 3
#   --out DIR        where the outputs go, default a new directory under ${TMPDIR:-/tmp}
#   --scaling        also the runs with one worker
#   -h, --help
# Environment: MW_PYTHON, MW_WORKERS (see bench/lib.sh); E2E_PROBE (see bench/e2e.sh).
# Needs what the three scripts need: root, smtp-source, smtp-sink, bash >= 5.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPS=3 OUT="" SCALING=0
while [ $# -gt 0 ]; do
    case "$1" in
        -r) REPS=$2; shift 2;;
        --out) OUT=$2; shift 2;;
        --scaling) SCALING=1; shift;;
        -h|--help) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0;;
        *) echo "goals.sh: unknown argument $1 (see --help)" >&2; exit 2;;
    esac
done
[ -n "$OUT" ] || OUT=$(mktemp -d "${TMPDIR:-/tmp}/mw-goals.XXXXXX")
mkdir -p "$OUT" || exit 2

boot=$(awk '/^btime/ {print $2}' /proc/stat)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo "booted $(date -u -d "@$boot" +%Y-%m-%dT%H:%M:%SZ), $(nproc) x ${cpu:-unknown CPU}, Linux $(uname -r)"
    echo "measured from $(date -u +%Y-%m-%dT%H:%MZ)"
} > "$OUT/machine.txt"

status=0
"$HERE/relay.sh" -r "$REPS" > "$OUT/relay.txt" 2>&1 || status=$?
"$HERE/accept.sh" -r "$REPS" > "$OUT/accept.txt" 2>&1 || status=$?
"$HERE/e2e.sh" -r "$REPS" > "$OUT/e2e.txt" 2>&1 || status=$?
if [ "$SCALING" = 1 ]; then
    MW_WORKERS=1 "$HERE/relay.sh" -r "$REPS" > "$OUT/relay-w1.txt" 2>&1 || status=$?
    MW_WORKERS=1 "$HERE/accept.sh" -r "$REPS" --skip latency,memory > "$OUT/accept-w1.txt" 2>&1 \
        || status=$?
fi
[ "$status" = 0 ] || echo "goals.sh: a benchmark failed (exit $status): see the files in $OUT" >&2
PY=${MW_PYTHON:-python3}
"$PY" "$HERE/goals.py" "$OUT" || status=$?
echo "(outputs in $OUT)" >&2
exit "$status"
