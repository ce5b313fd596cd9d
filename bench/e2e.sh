#!/usr/bin/env bash
# bench/e2e.sh - end-to-end latency of one relayed message, Mailwright against Postfix.
#
# One message at a time (Python's smtplib, a new connection each, no pipelining) into
# the server, which relays it to an smtp-sink; ../shared/bench/e2e_probe.py measures the
# accept latency (connect .. 250 .. QUIT) and the end-to-end latency (start of the send ..
# the sink has the final ".", from the sink's -c counter). Mailwright (this tree's src/,
# background delivery, smarthost [127.0.0.1]:SINKPORT, no STARTTLS, MW_WORKERS processes)
# and the system Postfix (bench/postfix.sh start PORT --relay SINKPORT) run at the same
# time, each to its own sink, and take turns rep by rep. Output (stdout, Markdown): the
# medians over the reps of each rep's p50, and the worst p90, per server and size. Per-rep
# lines (the probe's own) go to stderr.
#
# Usage: bench/e2e.sh [options]
#   --sizes LIST     message sizes, default "1k 100k"
#   -m COUNT         messages per rep, default 200
#   -r REPS          repetitions, default 3
#   --only mw|pf     measure one server only
#   --out FILE       also write the table to FILE
#   -h, --help
# Environment: MW_PYTHON, MW_WORKERS (see bench/lib.sh); E2E_PROBE (default
# ../shared/bench/e2e_probe.py beside the project).
# Needs root (the system Postfix), smtp-sink, bash >= 5.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

NLIST="1" SIZES="1k 100k" M=200 REPS=3 ONLY="" SETTLE=1 OUT=""
bench_parse "$@"
PROBE=${E2E_PROBE:-$ROOT/../shared/bench/e2e_probe.py}
[ -f "$PROBE" ] || die "no e2e probe at $PROBE (set E2E_PROBE)"
command -v smtp-sink >/dev/null || die "smtp-sink needed (apt-get install postfix)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-e2e.XXXXXX")
trap bench_stop_all EXIT
trap 'exit 130' INT TERM

relay_setup
[[ " $SERVERS " != *" mw "* ]] || mw_start || die "Mailwright did not start"
echo "# e2e.sh mailwright=127.0.0.1:$MW_PORT postfix=127.0.0.1:$PF_PORT m=$M reps=$REPS workers=${MW_WORKERS:-auto} cpus=$(nproc)" >&2

field() { tr ' ' '\n' | awk -F= -v k="$1" '$1==k{print $2}'; }
declare -A ACC P50 P90
for size in $SIZES; do
    bytes=$(bytes_of "$size")
    declare -A accs=() p50s=() p90s=()
    for rep in $(seq 1 "$REPS"); do
        for srv in $SERVERS; do
            sync; sleep "$SETTLE"
            line=$("$PY" "$PROBE" --mta "127.0.0.1:$(port_of "$srv")" \
                --counter-file "$WORK/sink-$srv.out" --count "$M" --size "$bytes" \
                --label "$srv" | grep '^e2e_latency') || die "the probe failed against $srv"
            echo "# rep=$rep $line" >&2
            accs[$srv]="${accs[$srv]:-} $(echo "$line" | field accept_p50_ms)"
            p50s[$srv]="${p50s[$srv]:-} $(echo "$line" | field e2e_p50_ms)"
            p90s[$srv]="${p90s[$srv]:-} $(echo "$line" | field e2e_p90_ms)"
        done
    done
    for srv in $SERVERS; do
        ACC[$srv,$size]=$(echo "${accs[$srv]}" | median)
        P50[$srv,$size]=$(echo "${p50s[$srv]}" | median)
        P90[$srv,$size]=$(echo "${p90s[$srv]}" | tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | tail -1)
        echo "# e2e $srv size=$size e2e_p50_runs=$(echo ${p50s[$srv]} | tr ' ' /)" >&2
    done
    unset accs p50s p90s
done

report() {
    echo "## End-to-end latency of one relayed message ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, workers=${MW_WORKERS:-auto}, $M messages one at a time, median of $REPS reps' p50)"
    echo
    echo "| size | accept p50 MW ms | accept p50 PF ms | e2e p50 MW ms | e2e p50 PF ms | ratio MW/PF | worst e2e p90 MW | worst e2e p90 PF |"
    echo "|---|---|---|---|---|---|---|---|"
    for size in $SIZES; do
        a=${P50[mw,$size]:-NA} b=${P50[pf,$size]:-NA}
        echo "| $size | ${ACC[mw,$size]:-NA} | ${ACC[pf,$size]:-NA} | $a | $b | $(ratio "$a" "$b") | ${P90[mw,$size]:-NA} | ${P90[pf,$size]:-NA} |"
    done
}
report
[ -z "$OUT" ] || report > "$OUT"
