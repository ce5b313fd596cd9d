#!/usr/bin/env bash
# bench/cluster.sh - Mailwright on SQLite, on PostgreSQL, two nodes on PostgreSQL, and
# Postfix, side by side in one run (issue 15).
#
# Four servers take turns run by run, for accept and then for relay throughput (as
# bench/accept.sh and bench/relay.sh measure them: smtp-source, one connection per message,
# 1 KiB; relaying to an smtp-sink):
#   sqlite   one Mailwright node, queue in SQLite (the default)
#   pg1      one node, queue in a PostgreSQL this script starts: initdb in a temp dir, a
#            free loopback port, fsync on, synchronous_commit on, pg_stat_statements loaded
#   pf       the system Postfix through bench/postfix.sh (hold queue; relayhost the sink)
#   pg2      two nodes (two daemons, [cluster] node mw-1 and mw-2) on the same database;
#            the load is split: each gets half the sessions and half the messages, from
#            two smtp-source at once; the figure is the time until both have finished
#            (accept) or until the sink has every message (relay)
# Every run starts on an empty queue (a fresh database for pg1 and pg2, created again
# before the daemons start) after a warm-up of 100 messages, a sync and a pause.
# Mailwright runs through bench/launch.py (MW_PG_ROUNDTRIPS: each process writes its
# round trips to the database when it stops).
#
# Output (stdout, Markdown), per mode, sessions and server: msgs/s (median), the ratio to
# Postfix, the busy CPU ms per message of the whole machine, the database round trips per
# message (client side: the daemons' count over their whole life, warm-up included,
# divided by the messages they handled), the statements per message the server ran in the
# measured run (pg_stat_statements: BEGIN and COMMIT only until psycopg prepared them), and
# the PostgreSQL server's CPU ms per message (the postmaster and all its processes, in the
# measured run);
# then a line projecting, from pg1's server CPU per message, how many nodes one primary
# can carry. Per-run lines go to stderr. Everything started is stopped by PID on exit and
# /etc/postfix is restored.
#
# Usage: bench/cluster.sh [options]
#   -n LIST          concurrent sessions, default "10 50" (pg2: half on each node)
#   --sizes LIST     message sizes, default "1k"
#   -m COUNT         messages per run, default 2000
#   -r REPS          repetitions, default 3
#   --modes LIST     default "accept relay"
#   --only mw|pf     mw: the three Mailwright servers only (no Postfix, no ratios)
#   --settle SEC     pause before each run, default 1
#   --out FILE       also write the tables to FILE
#   -h, --help
# Environment: MW_PYTHON (see bench/lib.sh), MW_WORKERS (default "auto").
# Needs root (Postfix; PostgreSQL runs as the postgres user), smtp-source, smtp-sink,
# PostgreSQL's initdb and postgres (/usr/lib/postgresql/*/bin), psql, bash >= 5.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

NLIST="10 50" SIZES="1k" M=2000 REPS=3 ONLY="" SETTLE=1 OUT="" MODES="accept relay"
FROM=bench-sender@example.org TO=bench-rcpt@example.com TMO=600 WARMUP=100

bench_option() {
    case "$1" in
        --modes) MODES=$2;;
        *) return 1;;
    esac
}
bench_parse "$@"
[ "$(id -u)" -eq 0 ] || die "root needed (PostgreSQL runs as the postgres user)"
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null \
    || die "smtp-source and smtp-sink needed (apt-get install postfix)"
CONFIGS="sqlite pg1 pf pg2"; [ "$ONLY" = mw ] && CONFIGS="sqlite pg1 pg2"
[ "$ONLY" = pf ] && die "--only pf: use bench/accept.sh or bench/relay.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-cluster.XXXXXX")
chmod 755 "$WORK"
cleanup() {
    local i
    for i in 1 2; do node_stop "$i"; done
    pg_stop
    bench_stop_all
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- PostgreSQL
pg_start || die "PostgreSQL did not start"   # PG_PORT, PG_PID, PG_URL (the database "mail")
pg_sql() { PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "$1"; }
pg_sql "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" > /dev/null || die "pg_stat_statements"
pg_fresh_db() {
    pg_sql "DROP DATABASE IF EXISTS mail WITH (FORCE)" > /dev/null
    pg_sql "CREATE DATABASE mail" > /dev/null || die "CREATE DATABASE failed"
}
pg_stat_statements_or_na() {   # pg_stat_statements_or_na CONFIG
    case "$1" in pg1|pg2) pg_statements;; *) echo NA;; esac
}
pg_statements() {
    pg_sql "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'mail')"
}

# ---------------------------------------------------------------- Mailwright nodes
# node_start I CONFIG: node I (1 or 2) from $WORK/nI/mailwright.toml on NODE_PORT[I]
declare -A NODE_PID=() NODE_PORT=()
for i in 1 2; do NODE_PORT[$i]=$(free_port); mkdir -p "$WORK/n$i"; done
PF_PORT=$(free_port)
node_config() {   # node_config I BACKEND MODE
    local i=$1 backend=$2 mode=$3 dir="$WORK/n$1" queue="" delivery
    if [ "$backend" = postgresql ]; then
        queue="backend = \"postgresql\"
postgresql = \"$PG_URL\""
    fi
    if [ "$mode" = accept ]; then
        delivery='mode = "queue"'
    else
        delivery="mode = \"background\"
tls_default = \"none\"

[routing]
smarthost = \"[127.0.0.1]:${SINK_PORT[mw]}\""
    fi
    # mw_config writes $WORK/mailwright.toml for $MW_PORT: borrow it for this node
    local work=$WORK; MW_PORT=${NODE_PORT[$i]}
    WORK=$dir mw_config "
[cluster]
node = \"mw-$i\"

[delivery]
$delivery"
    WORK=$work
    # the queue's backend goes into mw_config's [queue] table
    [ -z "$queue" ] || printf '%s\n' "/^directory = /a\\" "${queue//$'\n'/\\$'\n'}" \
        | sed -i -f - "$dir/mailwright.toml"
}

node_start() {
    local i=$1 dir="$WORK/n$1" t
    rm -rf "$dir/queue"
    MW_PG_ROUNDTRIPS="$dir/roundtrips" PYTHONPATH="$ROOT/src" "$PY" "$HERE/launch.py" \
        --config "$dir/mailwright.toml" serve --log-level WARNING >> "$dir/mailwright.log" 2>&1 &
    NODE_PID[$i]=$!
    for t in $(seq 1 400); do
        port_open "${NODE_PORT[$i]}" && return 0
        kill -0 "${NODE_PID[$i]}" 2>/dev/null || break
        nap 0.05
    done
    die "node $i did not start: $(tail -3 "$dir/mailwright.log")"
}

node_stop() {
    local i=$1
    [ -n "${NODE_PID[$i]:-}" ] || return 0
    kill "${NODE_PID[$i]}" 2>/dev/null
    wait "${NODE_PID[$i]}" 2>/dev/null
    NODE_PID[$i]=""
}

nodes_of() { case "$1" in pg2) echo "1 2";; sqlite|pg1) echo 1;; *) echo "";; esac; }

# ---------------------------------------------------------------- one run
port_of() { if [ "$1" = pf ]; then echo "$PF_PORT"; else echo "${NODE_PORT[1]}"; fi; }

prepare() {   # prepare CONFIG MODE: a fresh, warm server
    local cfg=$1 mode=$2 i base ports
    case "$cfg" in
        sqlite) node_config 1 sqlite "$mode";;
        pg1) pg_fresh_db; node_config 1 postgresql "$mode";;
        pg2) pg_fresh_db; node_config 1 postgresql "$mode"; node_config 2 postgresql "$mode";;
    esac
    for i in $(nodes_of "$cfg"); do rm -f "$WORK/n$i/roundtrips"; node_start "$i"; done
    ports=$(port_of "$cfg"); [ "$cfg" = pg2 ] && ports="${NODE_PORT[1]} ${NODE_PORT[2]}"
    local sink=mw; [ "$cfg" = pf ] && sink=pf
    sink_count "$sink"; base=${SINK_GOT[$sink]}
    for p in $ports; do
        smtp-source -s 10 -m $(( WARMUP / $(wc -w <<< "$ports") )) -l 1024 -f "$FROM" -t "$TO" \
            "127.0.0.1:$p" >/dev/null 2> "$WORK/warmup.err" || die "warm-up of $cfg failed: \
$(tail -2 "$WORK/warmup.err"); $(for i in $(nodes_of "$cfg"); do tail -5 "$WORK/n$i/mailwright.log"; done)"
    done
    if [ "$mode" = relay ]; then
        sink_wait "$sink" $(( base + WARMUP )) 60 || die "warm-up of $cfg: the sink got $(( SINK_GOT[$sink] - base ))"
    fi
    sync
    sleep "$SETTLE"
}

finish() {   # finish CONFIG: stop, empty, sync; sets RT (round trips per message) for nodes
    local cfg=$1 i total=0 any=0
    for i in $(nodes_of "$cfg"); do node_stop "$i"; done
    RT=NA
    if [ "$cfg" = pg1 ] || [ "$cfg" = pg2 ]; then
        for i in $(nodes_of "$cfg"); do
            [ -s "$WORK/n$i/roundtrips" ] || continue
            any=1; total=$(( total + $(awk '{s+=$2} END{print s+0}' "$WORK/n$i/roundtrips") ))
        done
        [ "$any" = 1 ] && RT=$(calc %.2f "$total / ($M + $WARMUP)")
        pg_sql "DROP DATABASE IF EXISTS mail WITH (FORCE)" > /dev/null
    fi
    [ "$cfg" = pf ] && pf_empty
    rm -rf "$WORK/n1/queue" "$WORK/n2/queue"
    sync
}

# measured CONFIG MODE SESSIONS BYTES: sets SECS (or fail, and WHY)
measured() {
    local cfg=$1 mode=$2 n=$3 bytes=$4 t0 t1 base sink=mw p k=1 pids=() rc=0
    [ "$cfg" = pf ] && sink=pf
    local ports; ports=$(port_of "$cfg"); [ "$cfg" = pg2 ] && { ports="${NODE_PORT[1]} ${NODE_PORT[2]}"; k=2; }
    sink_count "$sink"; base=${SINK_GOT[$sink]}
    t0=$EPOCHREALTIME
    for p in $ports; do
        timeout "$TMO" smtp-source -s $(( n / k )) -m $(( M / k )) -l "$bytes" -f "$FROM" -t "$TO" \
            "127.0.0.1:$p" > /dev/null 2>> "$WORK/source.err" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    t1=$EPOCHREALTIME
    if [ "$rc" != 0 ]; then SECS=fail WHY="smtp-source: $(tail -1 "$WORK/source.err")"; return; fi
    if [ "$mode" = relay ]; then
        if ! sink_wait "$sink" $(( base + M )) "$TMO"; then
            SECS=fail WHY="the sink got $(( SINK_GOT[$sink] - base )) of $M"; return
        fi
        t1=$EPOCHREALTIME
    fi
    SECS=$(calc %.4f "$t1 - $t0")
}

# ---------------------------------------------------------------- runs
echo "# cluster.sh nodes=127.0.0.1:${NODE_PORT[1]},${NODE_PORT[2]} postfix=127.0.0.1:$PF_PORT postgresql=127.0.0.1:$PG_PORT m=$M reps=$REPS cpus=$(nproc) python=$PY" >&2
declare -A RATE CPU RTS STM PGC
for mode in $MODES; do
    [[ " $CONFIGS " == *" pf "* ]] && { pf_cleanup; sink_stop pf; sink_start pf || die "smtp-sink for pf"; }
    sink_stop mw; sink_start mw || die "smtp-sink for Mailwright did not start"
    if [[ " $CONFIGS " == *" pf "* ]]; then
        if [ "$mode" = relay ]; then pf_start "$PF_PORT" --relay "${SINK_PORT[pf]}" || die "Postfix did not start"
        else pf_start "$PF_PORT" || die "Postfix did not start"; fi
    fi
    for size in $SIZES; do
        bytes=$(bytes_of "$size")
        for n in $NLIST; do
            declare -A runs=() cpus=() rts=() stms=() pgcs=()
            for rep in $(seq 1 "$REPS"); do
                for cfg in $CONFIGS; do
                    prepare "$cfg" "$mode"
                    [ "$cfg" = pf ] || pg_sql "SELECT pg_stat_statements_reset()" > /dev/null
                    s0=$(pg_stat_statements_or_na "$cfg"); p0=$(pg_ticks); c0=$(cpu_snap)
                    measured "$cfg" "$mode" "$n" "$bytes"
                    c1=$(cpu_snap); p1=$(pg_ticks); s1=$(pg_stat_statements_or_na "$cfg")
                    finish "$cfg"
                    if [ "$SECS" = fail ]; then
                        echo "# run $mode $cfg n=$n size=$size rep=$rep FAILED: $WHY" >&2
                        continue
                    fi
                    r=$(calc %.1f "$M / $SECS"); c=$(cpu_ms "$c0" "$c1" "$M")
                    pc=$(ticks_ms "$p0" "$p1" "$M"); st=NA
                    [ "$s1" = NA ] || st=$(calc %.2f "($s1 - $s0) / $M")
                    case "$cfg" in pg1|pg2) ;; *) pc=NA;; esac
                    runs[$cfg]="${runs[$cfg]:-} $r"; cpus[$cfg]="${cpus[$cfg]:-} $c"
                    rts[$cfg]="${rts[$cfg]:-} $RT"; stms[$cfg]="${stms[$cfg]:-} $st"; pgcs[$cfg]="${pgcs[$cfg]:-} $pc"
                    echo "# run $mode $cfg n=$n size=$size rep=$rep secs=$SECS msgs_per_s=$r cpu_ms_per_msg=$c round_trips_per_msg=$RT statements_per_msg=$st pg_cpu_ms_per_msg=$pc" >&2
                done
            done
            for cfg in $CONFIGS; do
                k="$mode,$cfg,$size,$n"
                RATE[$k]=$(echo "${runs[$cfg]:-}" | median); CPU[$k]=$(echo "${cpus[$cfg]:-}" | median)
                RTS[$k]=$(echo "${rts[$cfg]:-}" | median); STM[$k]=$(echo "${stms[$cfg]:-}" | median)
                PGC[$k]=$(echo "${pgcs[$cfg]:-}" | median)
            done
            unset runs cpus rts stms pgcs
        done
    done
done

# ---------------------------------------------------------------- report
name_of() { case "$1" in sqlite) echo "1 node, SQLite";; pg1) echo "1 node, PostgreSQL";; pf) echo "Postfix";; pg2) echo "2 nodes, PostgreSQL";; esac; }
report() {
    echo "## Mailwright on SQLite and on PostgreSQL, one and two nodes, against Postfix ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, smtp-source one connection per message, m=$M, median of $REPS)"
    echo
    echo "| mode | size | sessions | server | msgs/s | ratio to Postfix | CPU ms/msg (machine) | DB round trips/msg | DB statements/msg | PostgreSQL CPU ms/msg |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for mode in $MODES; do for size in $SIZES; do for n in $NLIST; do for cfg in $CONFIGS; do
        k="$mode,$cfg,$size,$n"
        echo "| $mode | $size | $n | $(name_of "$cfg") | ${RATE[$k]:-NA} | $(ratio "${RATE[$k]:-NA}" "${RATE[$mode,pf,$size,$n]:-NA}") | ${CPU[$k]:-NA} | ${RTS[$k]:-NA} | ${STM[$k]:-NA} | ${PGC[$k]:-NA} |"
    done; done; done; done
    echo
    local first=${SIZES%% *} last=${NLIST##* } mode k
    for mode in $MODES; do
        k="$mode,pg1,$first,$last"
        awk -v m="$mode" -v r="${RATE[$k]:-NA}" -v c="${PGC[$k]:-NA}" -v cpus="$(nproc)" 'BEGIN{
            if (r=="NA" || c=="NA" || c<=0) { print "Projection (" m "): not measured"; exit }
            per_core = 1000 / c
            printf "Projection (%s, %s sessions): PostgreSQL spent %.2f CPU ms per message, so one core of the primary carries ~%.0f msgs/s; at one node'"'"'s %.0f msgs/s a primary with %d such cores carries ~%.1f nodes (CPU only: the WAL fsync is shared by group commit, network round trips cost the nodes latency, not the primary CPU).\n", m, "'"$last"'", c, per_core, r, cpus, cpus * per_core / r
        }'
    done
}
report
[ -z "$OUT" ] || report > "$OUT"
