#!/usr/bin/env bash
# bench/phases.sh - where the latency of one session goes: each SMTP step, Mailwright
# against Postfix, side by side in one run.
#
# Starts Mailwright (this tree's src/, as bench/accept.sh: temp dir, free loopback port) and
# the system Postfix, then runs bench/phases.py against each in turn: sessions one at a
# time, a new connection each, no pipelining, and the median time of every step (connect
# until the greeting, EHLO, MAIL, RCPT, DATA, the content until its 250, QUIT until 221).
# Accept only by default (Mailwright delivery.mode = "queue", Postfix's hold queue); with
# --relay both relay to an smtp-sink of their own as in bench/e2e.sh, so the delivery that
# follows a 250 runs while the client says QUIT, and two more columns time each sink's
# receipt of the message: after the 221, and from the connection (end to end). Prints a
# Markdown table, one row per server and size (the median of the repetitions' medians);
# the repetitions' lines go to stderr.
#
# Usage: bench/phases.sh [options]
#   --sizes LIST     message sizes, default "1k 100k"
#   -m COUNT         sessions per repetition, default 300
#   -r REPS          repetitions (the servers take turns), default 3
#   --relay 1        relay to smtp-sink instead of accepting only
#   --only mw|pf     measure one server only
#   --settle SEC     pause before each repetition, default 1
#   --out FILE       also write the table to FILE
# Environment: MW_PYTHON as for bench/accept.sh; MW_WORKERS (default "auto").
# Needs root (Postfix is the system instance), bash >= 5.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

NLIST="1" SIZES="1k 100k" M=300 REPS=3 ONLY="" SETTLE=1 OUT="" RELAY=0
bench_option() {
    case "$1" in
        --relay) RELAY=$2;;
        *) return 1;;
    esac
}
bench_parse "$@"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-phases.XXXXXX")
trap bench_stop_all EXIT
trap 'exit 130' INT TERM

if [ "$RELAY" = 1 ]; then
    command -v smtp-sink >/dev/null || die "smtp-sink needed (apt-get install postfix)"
    relay_setup
else
    server_ports
    mw_config '
[delivery]
mode = "queue"'
    if [[ " $SERVERS " == *" pf "* ]]; then pf_start "$PF_PORT" || die "Postfix did not start"; fi
fi
if [[ " $SERVERS " == *" mw "* ]]; then mw_start || die "Mailwright did not start"; fi
echo "# phases.sh mailwright=127.0.0.1:$MW_PORT postfix=127.0.0.1:$PF_PORT relay=$RELAY m=$M reps=$REPS workers=${MW_WORKERS:-auto} cpus=$(nproc)" >&2

STEPS="connect ehlo mail rcpt data body quit total"
[ "$RELAY" = 1 ] && STEPS="$STEPS arrival e2e"
counter() { [ "$RELAY" = 1 ] && echo "--counter-file $WORK/sink-$1.out"; }
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1==k{print $2}'; }
declare -A MED
for size in $SIZES; do
    bytes=$(bytes_of "$size")
    declare -A lines=()
    for srv in $SERVERS; do   # warm up: first connections, code paths, the sink's session
        # shellcheck disable=SC2046 # counter: nothing or two words
        "$PY" "$HERE/phases.py" --mta "127.0.0.1:$(port_of "$srv")" --count 20 --size "$bytes" \
            $(counter "$srv") > /dev/null || die "the probe failed against $srv"
    done
    for rep in $(seq 1 "$REPS"); do
        for srv in $SERVERS; do
            sync; sleep "$SETTLE"
            # shellcheck disable=SC2046
            line=$("$PY" "$HERE/phases.py" --mta "127.0.0.1:$(port_of "$srv")" --count "$M" \
                --size "$bytes" --label "$srv" $(counter "$srv")) || die "the probe failed against $srv"
            echo "# rep=$rep $line" >&2
            lines[$srv]="${lines[$srv]:-}${line}"$'\n'
        done
    done
    for srv in $SERVERS; do
        for step in $STEPS; do
            MED[$srv,$size,$step]=$(printf '%s' "${lines[$srv]}" | while read -r l; do echo "$l" | field "$step"; done | median)
        done
    done
    unset lines
done

report() {
    echo "## One session, step by step ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, workers=${MW_WORKERS:-auto}, $([ "$RELAY" = 1 ] && echo relaying || echo accept only), median ms of $M sessions, median of $REPS reps)"
    echo
    local extra="" rule=""
    [ "$RELAY" = 1 ] && extra=" sink has it after 221 | end to end |" rule="---|---|"
    echo "| server | size | connect+greeting | EHLO | MAIL | RCPT | DATA | content→250 | QUIT | session |$extra"
    echo "|---|---|---|---|---|---|---|---|---|---|$rule"
    for size in $SIZES; do
        for srv in $SERVERS; do
            local row="| $srv | $size"
            for step in $STEPS; do row="$row | ${MED[$srv,$size,$step]:-NA}"; done
            echo "$row |"
        done
    done
}
report
[ -z "$OUT" ] || report > "$OUT"
