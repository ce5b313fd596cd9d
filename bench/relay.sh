#!/usr/bin/env bash
# bench/relay.sh - relay benchmark of Mailwright against Postfix, side by side in one run.
#
# End-to-end messages/s: Postfix's smtp-source sends M messages (one connection per
# message) into the server, which relays every one to an smtp-sink; the figure is M divided
# by the time from the start of smtp-source until the sink has counted all M (its -c
# counters). Mailwright (this tree's src/, background delivery, smarthost
# [127.0.0.1]:SINKPORT, no STARTTLS, config and queue under a temp dir) and the system
# Postfix (bench/postfix.sh start PORT --relay SINKPORT: relayhost [127.0.0.1]:SINKPORT,
# no DNS, default settings otherwise) each relay to their own smtp-sink, started once on a
# fresh free port for the whole run (a sink restarted between runs would break the
# connections a server keeps to it). Both keep up to 20 deliveries in flight to the one
# destination (Postfix's default_destination_concurrency_limit, Mailwright's
# delivery.max_per_destination) and reuse connections.
#
# The servers take turns run by run. Each run starts on an empty queue (Mailwright starts
# afresh) after a warm-up of 100 messages that the sink has received, a sync and a pause;
# after it the queue is emptied and synced. Output (stdout, Markdown): msgs/s relayed for
# both, the ratio, the accept phase alone (until smtp-source finished) and the machine's
# busy CPU ms per message. Per-run lines go to stderr. Everything started is stopped by PID
# on exit and /etc/postfix is restored.
#
# Usage: bench/relay.sh [options]
#   -n LIST          concurrent sessions, default "10 50"
#   --sizes LIST     message sizes, default "1k 100k"
#   -m COUNT         messages per run, default 2000
#   -r REPS          repetitions, default 3
#   --only mw|pf     measure one server only (no ratios)
#   --settle SEC     pause before each run, default 1
#   --out FILE       also write the table to FILE
#   -h, --help
# Environment: MW_PYTHON (see bench/lib.sh), MW_LAUNCH=1 (start through bench/launch.py).
# Needs root (the system Postfix), smtp-source, smtp-sink, bash >= 5.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

NLIST="10 50" SIZES="1k 100k" M=2000 REPS=3 ONLY="" SETTLE=1 OUT=""
FROM=bench-sender@example.org TO=bench-rcpt@example.com TMO=600 WARMUP=100

bench_parse "$@"
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null \
    || die "smtp-source and smtp-sink needed (apt-get install postfix)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-relay.XXXXXX")
trap bench_stop_all EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- servers and sinks
relay_setup
echo "# relay.sh mailwright=127.0.0.1:$MW_PORT postfix=127.0.0.1:$PF_PORT sinks=mw:${SINK_PORT[mw]:-}/pf:${SINK_PORT[pf]:-} m=$M reps=$REPS cpus=$(nproc) python=$PY" >&2

prepare() {   # a clean, warm server before a measured run: the sink got the warm-up
    local srv=$1 base
    if [ "$srv" = mw ]; then mw_start || die "Mailwright did not start"; fi
    sink_count "$srv"; base=${SINK_GOT[$srv]}
    smtp-source -s 10 -m "$WARMUP" -l 1024 -f "$FROM" -t "$TO" "127.0.0.1:$(port_of "$srv")" \
        >/dev/null 2>&1 || die "warm-up of $srv failed"
    sink_wait "$srv" $(( base + WARMUP )) 60 || die "warm-up of $srv: the sink got $(( SINK_GOT[$srv] - base )) of $WARMUP"
    sync
    sleep "$SETTLE"
}

finish() {   # empty the queue (nothing should be left) and sync before the next run
    if [ "$1" = mw ]; then
        mw_stop; rm -rf "$WORK/queue"
    else
        pf_empty
    fi
    sync
}

# relay_run SERVER SESSIONS BYTES: sets SECS (until the sink has all) and ACC (until
# smtp-source finished), or SECS=fail and ACC=why. Not in $(...): the sink's state is here.
relay_run() {
    local srv=$1 base t0 t1 t2 port
    port=$(port_of "$srv")
    sink_count "$srv"; base=${SINK_GOT[$srv]}
    t0=$EPOCHREALTIME
    if ! timeout "$TMO" smtp-source -s "$2" -m "$M" -l "$3" -f "$FROM" -t "$TO" \
        "127.0.0.1:$port" > /dev/null 2> "$WORK/source.err"; then
        SECS=fail ACC="smtp-source: $(tail -1 "$WORK/source.err")"; return
    fi
    t1=$EPOCHREALTIME
    if ! sink_wait "$srv" $(( base + M )) "$TMO"; then
        SECS=fail ACC="the sink got $(( SINK_GOT[$srv] - base )) of $M"; return
    fi
    t2=$EPOCHREALTIME
    SECS=$(calc %.4f "$t2 - $t0") ACC=$(calc %.4f "$t1 - $t0")
}

# ---------------------------------------------------------------- runs
declare -A RATE ACC CPU
for size in $SIZES; do
    bytes=$(bytes_of "$size")
    for n in $NLIST; do
        declare -A runs=() accs=() cpus=()
        for rep in $(seq 1 "$REPS"); do
            for srv in $SERVERS; do
                prepare "$srv"
                c0=$(cpu_snap)
                relay_run "$srv" "$n" "$bytes"
                c1=$(cpu_snap)
                finish "$srv"
                secs=$SECS acc=$ACC
                if [ "$secs" = fail ]; then
                    echo "# run relay $srv n=$n size=$size rep=$rep FAILED: $acc" >&2
                    continue
                fi
                r=$(calc %.1f "$M / $secs"); a=$(calc %.1f "$M / $acc"); c=$(cpu_ms "$c0" "$c1" "$M")
                runs[$srv]="${runs[$srv]:-} $r"; accs[$srv]="${accs[$srv]:-} $a"; cpus[$srv]="${cpus[$srv]:-} $c"
                echo "# run relay $srv n=$n size=$size rep=$rep secs=$secs msgs_per_s=$r accept_msgs_per_s=$a cpu_ms_per_msg=$c" >&2
            done
        done
        for srv in $SERVERS; do
            RATE[$srv,$size,$n]=$(echo "${runs[$srv]:-}" | median)
            ACC[$srv,$size,$n]=$(echo "${accs[$srv]:-}" | median)
            CPU[$srv,$size,$n]=$(echo "${cpus[$srv]:-}" | median)
            echo "# relay $srv n=$n size=$size msgs_per_s=${RATE[$srv,$size,$n]} runs=$(echo ${runs[$srv]:-} | tr ' ' /)" >&2
        done
        unset runs accs cpus
    done
done

# ---------------------------------------------------------------- report
report() {
    echo "## Mailwright vs Postfix: relay benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, smtp-source -> server -> smtp-sink, one connection per message in, m=$M, median of $REPS)"
    echo
    echo "| size | sessions | Mailwright msgs/s | Postfix msgs/s | ratio MW/PF | accept phase MW | accept phase PF | CPU ms/msg MW | CPU ms/msg PF |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for size in $SIZES; do for n in $NLIST; do
        a=${RATE[mw,$size,$n]:-NA} b=${RATE[pf,$size,$n]:-NA}
        echo "| $size | $n | $a | $b | $(ratio "$a" "$b") | ${ACC[mw,$size,$n]:-NA} | ${ACC[pf,$size,$n]:-NA} | ${CPU[mw,$size,$n]:-NA} | ${CPU[pf,$size,$n]:-NA} |"
    done; done
}
report
[ -z "$OUT" ] || report > "$OUT"
