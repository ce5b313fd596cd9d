#!/usr/bin/env bash
# bench/profile.sh - where Mailwright spends its time while accepting (or relaying) mail.
#
# Starts a Mailwright daemon (this tree's src/ through bench/launch.py, fresh queue in a
# temp dir, free loopback port, log level WARNING), attaches py-spy to it, drives it with
# smtp-source, and prints the functions with the most samples, by own time ("self") and
# including callees ("total"), per thread. The raw collapsed stacks are kept in OUTDIR. It
# also prints the daemon's own CPU time per message (user+system, per thread), which the
# noise of other processes on a shared machine disturbs much less than msgs/s.
#
# Usage: bench/profile.sh [-s SESSIONS] [-m COUNT] [-l BYTES] [-o OUTDIR] [-r RATE] [-n] [-g]
#                         [-R] [-D]
#   defaults: -s 10 -m 4000 -l 102400 -o ./profile-out -r 250 (samples per second)
#   -n: no py-spy, only the rate and the CPU time per message
#   -g: only samples holding the GIL (py-spy --gil): who keeps the other thread waiting
#   -R: relay: deliver everything to an smtp-sink (smarthost, background delivery, as
#       bench/relay.sh); the rate and CPU are until the sink has all COUNT messages
#   -D: accept with OpenDKIM signing as a milter (as bench/dkim.sh); senders and From:
#       in its domain.
# The daemon is one process (MW_WORKERS=1) unless MW_WORKERS says otherwise; with workers,
# the CPU lines cover the supervisor and every worker, thread by thread, and py-spy follows
# the workers (--subprocesses). The writer statistics cover one process only.
# Without -R the daemon only queues (delivery.mode = "queue"), as Postfix's hold queue in
# bench/accept.sh.
# Needs py-spy in the Python used (pip install py-spy) and root or ptrace rights.
# Environment: MW_PYTHON as for bench/accept.sh; MW_WRITER_STATS and the other switches
# of bench/launch.py.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
S=10 M=4000 L=102400 OUTDIR=./profile-out RATE=250 SPYING=1 GIL=() RELAY=0 DKIM=0
while getopts "s:m:l:o:r:ngRDh" opt; do
    case "$opt" in
        s) S=$OPTARG;; m) M=$OPTARG;; l) L=$OPTARG;; o) OUTDIR=$OPTARG;; r) RATE=$OPTARG;; n) SPYING=0;; g) GIL=(--gil);;
        R) RELAY=1;; D) DKIM=1;;
        *) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2;;
    esac
done
bench_python || { echo "profile.sh: no Python (set MW_PYTHON)" >&2; exit 2; }
SPY=$(dirname "$PY")/py-spy
[ -x "$SPY" ] || SPY=$(command -v py-spy) || [ "$SPYING" -eq 0 ] \
    || { echo "profile.sh: py-spy not found (pip install py-spy)" >&2; exit 2; }
mkdir -p "$OUTDIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-profile.XXXXXX")
SPYPID=""
cleanup() {
    [ -n "$SPYPID" ] && kill -INT "$SPYPID" 2>/dev/null && wait "$SPYPID" 2>/dev/null
    mw_stop
    local stats=""
    [ -s "$WORK/writer-stats" ] && stats=$(cat "$WORK/writer-stats")
    bench_stop_all   # removes WORK before printing: a closed pipe (| head) would end us on the echo
    [ -z "$stats" ] || echo "# writer $stats"
}
trap cleanup EXIT
FROM=a@example.org TO=b@example.com
EXTRA=""
if [ "$RELAY" -eq 1 ]; then
    sink_start relay || exit 2
    EXTRA="[routing]
smarthost = \"[127.0.0.1]:${SINK_PORT[relay]}\"
[delivery]
mode = \"background\"
tls_default = \"none\""
else   # accept only: no delivery (no DNS, no bounces) while measuring
    EXTRA="[delivery]
mode = \"queue\""
fi
if [ "$DKIM" -eq 1 ]; then
    FROM=bench-sender@example.org
    dkim_start example.org || exit 2
    EXTRA="$EXTRA
[[filters]]
name = \"dkim\"
milter = \"inet:$DKIM_PORT@127.0.0.1\""
fi
MW_PORT=$(free_port)
MW_WORKERS=${MW_WORKERS:-1} mw_config "$EXTRA"  # one process: py-spy follows one pid
export MW_WRITER_STATS=${MW_WRITER_STATS:-$WORK/writer-stats}   # see bench/launch.py
MW_LAUNCH=1 mw_start || exit 2
PID=$MW_PID
warm=200
smtp-source -s 10 -m $warm -l 1024 -f "$FROM" -t "$TO" "127.0.0.1:$MW_PORT" >/dev/null
if [ "$RELAY" -eq 1 ]; then sink_wait relay $warm 60 || echo "profile.sh: warm-up not relayed" >&2; fi
if [ "$SPYING" -eq 1 ]; then
    SUB=(); [ "${MW_WORKERS:-1}" = 1 ] || SUB=(--subprocesses)   # the workers are its children
    "$SPY" record --pid "$PID" --rate "$RATE" --threads --nonblocking "${GIL[@]}" "${SUB[@]}" --format raw \
        -o "$OUTDIR/stacks.txt" > "$OUTDIR/py-spy.log" 2>&1 &
    SPYPID=$!
    sleep 1
fi
# per thread: "tid name ticks oncpu_ns runqueue_ns sticks" (utime+stime in clock ticks;
# schedstat: time on the CPU and time spent runnable but waiting for a CPU; stime alone)
# (with workers: every thread of the supervisor and of each worker, its children)
thread_ticks() {
    local p t
    for p in "$PID" $(pgrep -P "$PID"); do for t in /proc/"$p"/task/*; do
        echo "${t##*/} $(awk '{ sub(/^[^(]*\(/, ""); name=$0; sub(/\).*/, "", name);
               sub(/^[^)]*\) /, ""); print name, $12 + $13 }' "$t/stat" 2>/dev/null) $(cut -d' ' -f1,2 "$t/schedstat" 2>/dev/null) $(awk '{ sub(/^[^)]*\) /, ""); print $13 }' "$t/stat" 2>/dev/null)"
    done; done
}
thread_ticks > "$WORK/ticks0"
t0=$EPOCHREALTIME
smtp-source -s "$S" -m "$M" -l "$L" -f "$FROM" -t "$TO" "127.0.0.1:$MW_PORT" >/dev/null \
    || echo "profile.sh: smtp-source failed" >&2
if [ "$RELAY" -eq 1 ]; then
    sink_wait relay $(( warm + M )) 600 || echo "profile.sh: the sink got $(( SINK_GOT[relay] - warm )) of $M" >&2
fi
t1=$EPOCHREALTIME
thread_ticks > "$WORK/ticks1"
awk -v a="$t0" -v b="$t1" -v m="$M" 'BEGIN{printf "# %d messages in %.2f s: %.0f msgs/s\n", m, b-a, m/(b-a)}'
awk -v m="$M" -v pids=" $PID $(pgrep -P "$PID" | tr '\n' ' ')" -v hz="$(getconf CLK_TCK)" '
    NR==FNR { before[$1] = $3; oncpu[$1] = $4; waited[$1] = $5; sys[$1] = $6; next }
    { d = ($3 - before[$1]) * 1000 / hz / m; total += d
      s = ($6 - sys[$1]) * 1000 / hz / m; kern += s
      main = index(pids, " " $1 " ") ? "main thread " $1 " (" $2 ")" : "thread " $1 " (" $2 ")"
      if (d > 0) printf "# cpu %s: %.3f ms/msg (system %.3f; waited for a CPU %.3f ms/msg)\n",
          main, d, s, ($5 - waited[$1]) / 1e6 / m }
    END { printf "# cpu daemon total: %.3f ms/msg (system %.3f)\n", total, kern }' "$WORK/ticks0" "$WORK/ticks1"
if [ "$SPYING" -eq 1 ]; then
    kill -INT "$SPYPID"; wait "$SPYPID" 2>/dev/null; SPYPID=""
    "$PY" "$HERE/stacks.py" "$OUTDIR/stacks.txt"
fi
