#!/usr/bin/env bash
# bench/profile.sh - where Mailwright spends its time while accepting mail.
#
# Starts a Mailwright daemon (this tree's src/, fresh queue in a temp dir, free loopback
# port, log level WARNING), attaches py-spy to it, drives it with smtp-source, and prints
# the functions with the most samples, by own time ("self") and including callees
# ("total"), per thread. The raw collapsed stacks are kept in OUTDIR. It also prints the
# daemon's own CPU time per message (user+system, per thread), which the noise of other
# processes on a shared machine disturbs much less than msgs/s.
#
# Usage: bench/profile.sh [-s SESSIONS] [-m COUNT] [-l BYTES] [-o OUTDIR] [-r RATE] [-n]
#   defaults: -s 10 -m 4000 -l 102400 -o ./profile-out -r 250 (samples per second)
#   -n: no py-spy, only the rate and the CPU time per message
#   -g: only samples holding the GIL (py-spy --gil): who keeps the other thread waiting
# Needs py-spy in the Python used (pip install py-spy) and root or ptrace rights.
# Environment: MW_PYTHON as for bench/accept.sh.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
S=10 M=4000 L=102400 OUTDIR=./profile-out RATE=250 SPYING=1 GIL=()
while getopts "s:m:l:o:r:ngh" opt; do
    case "$opt" in
        s) S=$OPTARG;; m) M=$OPTARG;; l) L=$OPTARG;; o) OUTDIR=$OPTARG;; r) RATE=$OPTARG;; n) SPYING=0;; g) GIL=(--gil);;
        *) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2;;
    esac
done
PY=${MW_PYTHON:-}
[ -n "$PY" ] || for p in "$ROOT/.venv/bin/python" /work/main/.venv/bin/python; do [ -x "$p" ] && { PY=$p; break; }; done
SPY=$(dirname "$PY")/py-spy
[ -x "$SPY" ] || SPY=$(command -v py-spy) || [ "$SPYING" -eq 0 ] \
    || { echo "profile.sh: py-spy not found (pip install py-spy)" >&2; exit 2; }
mkdir -p "$OUTDIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-profile.XXXXXX")
PID="" SPYPID=""
cleanup() {
    [ -n "$SPYPID" ] && kill -INT "$SPYPID" 2>/dev/null && wait "$SPYPID" 2>/dev/null
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    local stats=""
    [ -s "$WORK/writer-stats" ] && stats=$(cat "$WORK/writer-stats")
    rm -rf "$WORK"    # before printing: a closed pipe (| head) would end us on the echo
    [ -z "$stats" ] || echo "# writer $stats"
}
trap cleanup EXIT
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/mailwright.toml" <<EOF
hostname = "mailwright-under-test.localdomain"
[[listeners]]
address = "127.0.0.1"
port = $PORT
[server]
max_connections = 4000
max_connections_per_ip = 4000
[queue]
directory = "$WORK/queue"
EOF
export MW_WRITER_STATS=$WORK/writer-stats   # see bench/launch.py
PYTHONPATH="$ROOT/src" "$PY" "$HERE/launch.py" --config "$WORK/mailwright.toml" serve --log-level WARNING \
    > "$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
smtp-source -s 10 -m 200 -l 1024 -f a@example.org -t b@example.com "127.0.0.1:$PORT" >/dev/null
if [ "$SPYING" -eq 1 ]; then
    "$SPY" record --pid "$PID" --rate "$RATE" --threads --nonblocking "${GIL[@]}" --format raw \
        -o "$OUTDIR/stacks.txt" > "$OUTDIR/py-spy.log" 2>&1 &
    SPYPID=$!
    sleep 1
fi
# per thread: "tid name ticks oncpu_ns runqueue_ns" (utime+stime in clock ticks; schedstat:
# time on the CPU and time spent runnable but waiting for a CPU)
thread_ticks() {
    local t
    for t in /proc/"$PID"/task/*; do
        echo "${t##*/} $(awk '{ sub(/^[^(]*\(/, ""); name=$0; sub(/\).*/, "", name);
               sub(/^[^)]*\) /, ""); print name, $12 + $13 }' "$t/stat" 2>/dev/null) $(cut -d' ' -f1,2 "$t/schedstat" 2>/dev/null)"
    done
}
thread_ticks > "$WORK/ticks0"
t0=$EPOCHREALTIME
smtp-source -s "$S" -m "$M" -l "$L" -f a@example.org -t b@example.com "127.0.0.1:$PORT" >/dev/null \
    || echo "profile.sh: smtp-source failed" >&2
t1=$EPOCHREALTIME
thread_ticks > "$WORK/ticks1"
awk -v a="$t0" -v b="$t1" -v m="$M" 'BEGIN{printf "# %d messages in %.2f s: %.0f msgs/s\n", m, b-a, m/(b-a)}'
awk -v m="$M" -v pid="$PID" -v hz="$(getconf CLK_TCK)" '
    NR==FNR { before[$1] = $3; oncpu[$1] = $4; waited[$1] = $5; next }
    { d = ($3 - before[$1]) * 1000 / hz / m; total += d
      if (d > 0) printf "# cpu %s: %.3f ms/msg (waited for a CPU %.3f ms/msg)\n",
          ($1 == pid ? "main thread" : "thread " $1), d, ($5 - waited[$1]) / 1e6 / m }
    END { printf "# cpu daemon total: %.3f ms/msg\n", total }' "$WORK/ticks0" "$WORK/ticks1"
if [ "$SPYING" -eq 1 ]; then
    kill -INT "$SPYPID"; wait "$SPYPID" 2>/dev/null; SPYPID=""
    "$PY" "$HERE/stacks.py" "$OUTDIR/stacks.txt"
fi
