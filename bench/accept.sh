#!/usr/bin/env bash
# bench/accept.sh - accept benchmark of Mailwright against Postfix, side by side in one run.
#
# Runs a Mailwright daemon (this tree's src/, config and queue under a temp dir, listener
# on a free loopback port, high connection limits, log level WARNING, delivery.mode =
# "queue": accept only) and the system Postfix
# on another free loopback port (accept-only: every message goes to the hold queue; see
# bench/postfix.sh), then drives both with Postfix's smtp-source (one connection per
# message) and prints, as a Markdown table:
#   accept   messages/s until every message got its 250, for each concurrency and size
#            (median of the repetitions), both servers, and the ratio Mailwright/Postfix;
#            plus the machine's busy CPU ms per message (all processes)
#   latency  ms per message for one session (a new connection per message)
#   memory   Mailwright's RSS after one 1 KiB message, and its peak RSS (VmHWM, reset
#            before the message, plus VmRSS sampled every 10 ms) while it accepts one
#            100 MiB message; with workers, of every worker (not the supervisor, which
#            never holds a message), reported for the one whose peak grew most: the worker
#            that took the message (the table's heading names it)
# The servers take turns run by run, so drift on a shared machine hits both alike. Each run
# starts on an empty queue (Mailwright starts afresh for every run), after a short warm-up,
# a sync and a pause; right after it the queue is emptied again (Postfix: postsuper -d ALL
# hold; Mailwright: stopped, queue removed) and synced, so that neither server pays for the
# other's deletions. Everything started is stopped by its PID on exit and /etc/postfix is
# restored.
#
# Usage: bench/accept.sh [options]            (make bench runs it with the defaults)
#   -n LIST          concurrent sessions, default "1 10 50"
#   --sizes LIST     message sizes, default "1k 100k"
#   -m COUNT         messages per throughput run, default 2000
#   -r REPS          repetitions, default 3
#   --lat-count N    messages per latency run, default 500
#   --big SIZE       size of the memory-test message, default 100m
#   --only mw|pf     measure one server only (no ratios)
#   --skip LIST      comma list of parts to skip: accept,latency,memory
#   --settle SEC     pause before each run, default 1
#   --out FILE       also write the table to FILE
#   -h, --help
# Environment: MW_PYTHON (default .venv/bin/python of this tree, else /work/main/.venv).
# Needs root (Postfix is the system instance), smtp-source, bash >= 5.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

NLIST="1 10 50" SIZES="1k 100k" M=2000 REPS=3 LATM=500 BIG=100m ONLY="" SKIP="" SETTLE=1 OUT=""
FROM=bench-sender@example.org TO=bench-rcpt@example.com TMO=600

bench_option() {
    case "$1" in
        --lat-count) LATM=$2;;
        --big) BIG=$2;;
        --skip) SKIP=$2;;
        *) return 1;;
    esac
}
bench_parse "$@"
skipped() { [[ ",$SKIP," == *",$1,"* ]]; }
command -v smtp-source >/dev/null || die "smtp-source not found (apt-get install postfix)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-accept.XXXXXX")
SAMPLER=""
cleanup() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
    bench_stop_all
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- servers
server_ports
MW_MAX_SIZE=$(( $(bytes_of "$BIG") * 2 ))

run_source() {   # run_source SERVER SESSIONS COUNT BYTES: elapsed seconds, or "fail"
    source_run "$(port_of "$1")" "$2" "$3" "$4" "$FROM" "$TO"
}

# ---------------------------------------------------------------- start both
# accept only, as Postfix's hold queue: in background mode Mailwright would look up
# example.com in the DNS (not on loopback), bounce for its null MX, and deliver the double
# bounces into /var/mail, all while being measured
mw_config '
[delivery]
mode = "queue"'
if [[ " $SERVERS " == *" pf "* ]]; then
    pf_start "$PF_PORT" || die "Postfix did not start"
fi
echo "# accept.sh mailwright=127.0.0.1:$MW_PORT postfix=127.0.0.1:$PF_PORT m=$M reps=$REPS cpus=$(nproc) python=$PY" >&2

declare -A RATE CPU LAT
# ---------------------------------------------------------------- throughput
if ! skipped accept; then
    for size in $SIZES; do
        bytes=$(bytes_of "$size")
        for n in $NLIST; do
            declare -A runs=() cpus=()
            for rep in $(seq 1 "$REPS"); do
                for srv in $SERVERS; do
                    accept_prepare "$srv"
                    c0=$(cpu_snap)
                    secs=$(run_source "$srv" "$n" "$M" "$bytes")
                    c1=$(cpu_snap)
                    accept_finish "$srv"
                    if [ "$secs" = fail ]; then
                        echo "# run accept $srv n=$n size=$size rep=$rep FAILED: $(tail -1 "$WORK/source.err")" >&2
                        continue
                    fi
                    r=$(calc %.1f "$M / $secs"); c=$(cpu_ms "$c0" "$c1" "$M")
                    runs[$srv]="${runs[$srv]:-} $r"; cpus[$srv]="${cpus[$srv]:-} $c"
                    echo "# run accept $srv n=$n size=$size rep=$rep secs=$secs msgs_per_s=$r cpu_ms_per_msg=$c" >&2
                done
            done
            for srv in $SERVERS; do
                RATE[$srv,$size,$n]=$(echo "${runs[$srv]:-}" | median)
                CPU[$srv,$size,$n]=$(echo "${cpus[$srv]:-}" | median)
                echo "# accept $srv n=$n size=$size msgs_per_s=${RATE[$srv,$size,$n]} runs=$(echo ${runs[$srv]:-} | tr ' ' /)" >&2
            done
            unset runs cpus
        done
    done
fi

# ---------------------------------------------------------------- latency
if ! skipped latency; then
    for size in $SIZES; do
        bytes=$(bytes_of "$size")
        declare -A runs=()
        for rep in $(seq 1 "$REPS"); do
            for srv in $SERVERS; do
                accept_prepare "$srv"
                secs=$(run_source "$srv" 1 "$LATM" "$bytes")
                accept_finish "$srv"
                if [ "$secs" = fail ]; then
                    echo "# run latency $srv size=$size rep=$rep FAILED: $(tail -1 "$WORK/source.err")" >&2
                    continue
                fi
                v=$(calc %.3f "$secs * 1000 / $LATM")
                runs[$srv]="${runs[$srv]:-} $v"
                echo "# run latency $srv size=$size rep=$rep ms_per_msg=$v" >&2
            done
        done
        for srv in $SERVERS; do LAT[$srv,$size]=$(echo "${runs[$srv]:-}" | median); done
        unset runs
    done
fi

# ---------------------------------------------------------------- memory
mw_acceptors() {   # the processes that take mail: the workers (mailwright-wN below MW_PID,
                   # at any depth), or MW_PID itself when it is the only process (workers = 1)
    local found
    found=$(ps -e -o pid=,ppid=,comm= | awk -v root="$MW_PID" '
        { parent[$1] = $2; name[$1] = $3 }
        END { for (p in parent) { q = p; while (q in parent && q != root && q > 1) q = parent[q]
                                  if (q == root && p != root && name[p] ~ /^mailwright-w/) print p } }')
    echo "${found:-$MW_PID}"
}
if ! skipped memory && [[ " $SERVERS " == *" mw "* ]]; then
    mw_start || die "Mailwright did not start"
    smtp-source -s 1 -m 1 -l 1024 -f "$FROM" -t "$TO" "127.0.0.1:$MW_PORT" >/dev/null 2>&1 || die "1 KiB message failed"
    # with workers the main PID is the supervisor, which never sees a message: measure every
    # worker and report the one whose memory grew most (the one that took the big message)
    ACCEPTORS=$(mw_acceptors)
    declare -A RSS1 HWM1
    for p in $ACCEPTORS; do
        RSS1[$p]=$(status_kb "$p" VmRSS); HWM1[$p]=$(status_kb "$p" VmHWM)
        echo 5 > "/proc/$p/clear_refs"   # reset VmHWM to the current RSS
    done
    ( declare -A peak; while kill -0 "$MW_PID" 2>/dev/null; do
          for p in $ACCEPTORS; do
              v=$(status_kb "$p" VmRSS)
              [ -n "$v" ] && [ "$v" -gt "${peak[$p]:-0}" ] && { peak[$p]=$v; echo "$v" > "$WORK/sampled.$p"; }
          done
          sleep 0.01
      done ) &
    SAMPLER=$!
    big=$(bytes_of "$BIG")
    secs=$(run_source mw 1 1 "$big")
    kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""
    [ "$secs" = fail ] && die "the $BIG message failed: $(tail -1 "$WORK/source.err")"
    MEM_PID="" growth=-1
    for p in $ACCEPTORS; do
        h=$(status_kb "$p" VmHWM)
        [ -n "$h" ] || continue   # exited meanwhile
        echo "# memory pid=$p comm=$(cat "/proc/$p/comm" 2>/dev/null) rss_after_1k_kb=${RSS1[$p]} peak_during_${BIG}_kb=$h sampled_max_kb=$(cat "$WORK/sampled.$p" 2>/dev/null || echo NA)" >&2
        if [ $(( h - RSS1[$p] )) -gt "$growth" ]; then growth=$(( h - RSS1[$p] )); MEM_PID=$p HWM_BIG=$h; fi
    done
    [ -n "$MEM_PID" ] || die "no Mailwright process left to measure"
    RSS_1K=${RSS1[$MEM_PID]} HWM_1K=${HWM1[$MEM_PID]}
    SAMPLED_BIG=$(cat "$WORK/sampled.$MEM_PID" 2>/dev/null)
    count=$(echo "$ACCEPTORS" | wc -w)
    if [ "$MEM_PID" = "$MW_PID" ]; then
        MEM_WHO="the daemon (pid $MEM_PID, one process)"
    else
        MEM_WHO="worker $(cat "/proc/$MEM_PID/comm") (pid $MEM_PID) of $count, the one that took the $BIG message"
    fi
    echo "# memory measured: $MEM_WHO rss_after_1k_kb=$RSS_1K hwm_after_1k_kb=$HWM_1K peak_during_${BIG}_kb=$HWM_BIG sampled_max_kb=${SAMPLED_BIG:-NA} secs=$secs" >&2
fi

# ---------------------------------------------------------------- report
report() {
    echo "## Mailwright vs Postfix: accept benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, smtp-source, one connection per message, m=$M, median of $REPS)"
    echo
    if ! skipped accept; then
        echo "| size | sessions | Mailwright msgs/s | Postfix msgs/s | ratio MW/PF | CPU ms/msg MW | CPU ms/msg PF |"
        echo "|---|---|---|---|---|---|---|"
        for size in $SIZES; do for n in $NLIST; do
            a=${RATE[mw,$size,$n]:-NA} b=${RATE[pf,$size,$n]:-NA}
            echo "| $size | $n | $a | $b | $(ratio "$a" "$b") | ${CPU[mw,$size,$n]:-NA} | ${CPU[pf,$size,$n]:-NA} |"
        done; done
        echo
    fi
    if ! skipped latency; then
        echo "| single session latency (ms/msg, new connection each, $LATM msgs) | Mailwright | Postfix | ratio MW/PF |"
        echo "|---|---|---|---|"
        for size in $SIZES; do
            a=${LAT[mw,$size]:-NA} b=${LAT[pf,$size]:-NA}
            echo "| $size | $a | $b | $(ratio "$a" "$b") |"
        done
        echo
    fi
    if ! skipped memory && [ -n "${HWM_BIG:-}" ]; then
        echo "| Mailwright memory: $MEM_WHO | MiB |"
        echo "|---|---|"
        echo "| RSS after one 1 KiB message | $(mib "$RSS_1K") |"
        echo "| peak RSS since start, after one 1 KiB message (VmHWM) | $(mib "$HWM_1K") |"
        echo "| peak RSS while accepting one $BIG message (VmHWM, reset before it) | $(mib "$HWM_BIG") |"
        echo "| largest sampled RSS during it (every 10 ms) | $(mib "${SAMPLED_BIG:-}") |"
        echo "| growth: peak during $BIG - RSS after 1 KiB | $(mib $(( HWM_BIG - RSS_1K ))) |"
    fi
}
report
[ -z "$OUT" ] || report > "$OUT"
