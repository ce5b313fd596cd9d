#!/usr/bin/env bash
# bench/dkim.sh - accept benchmark with OpenDKIM signing, Mailwright against Postfix.
#
# One OpenDKIM (signing mode, a 2048-bit key made by opendkim-genkey under a temp dir,
# RequireSafeKeys no, Canonicalization relaxed/simple, on a free loopback port) is the
# milter of both servers: Mailwright (this tree's src/, [[filters]] milter =
# "inet:PORT@127.0.0.1", delivery.mode = "queue": it only queues) and the system Postfix
# (bench/postfix.sh start PORT --milter inet:127.0.0.1:PORT: smtpd_milters,
# milter_default_action = tempfail, milter_protocol = 6, every message put on hold).
# smtp-source sends 1 KiB messages, one connection per message, from
# bench-sender@example.org with that From: header, so OpenDKIM signs every one; before
# the runs, one queued message of each server is checked for a DKIM-Signature header.
# The figure is messages/s until every message got its 250 (which both servers give
# only after the milter's end-of-message reply and the queue commit); after each run the
# server's queue must hold all of them.
#
# The servers take turns run by run; each run starts on an empty queue after a warm-up,
# a sync and a pause, and the queue is emptied and synced after it. Output (stdout,
# Markdown): msgs/s for both, the ratio, the machine's busy CPU ms per message and
# OpenDKIM's own CPU ms per message (user+system of its process). Per-run
# lines go to stderr. Everything started is stopped by PID on exit and /etc/postfix is
# restored.
#
# Usage: bench/dkim.sh [options]
#   -n LIST          concurrent sessions, default "10 50"
#   --sizes LIST     message sizes, default "1k"
#   -m COUNT         messages per run, default 2000
#   -r REPS          repetitions, default 3
#   --only mw|pf     measure one server only (no ratios)
#   --settle SEC     pause before each run, default 1
#   --out FILE       also write the table to FILE
#   -h, --help
# Environment: MW_PYTHON (see bench/lib.sh), MW_LAUNCH=1 (start through bench/launch.py).
# Needs root (the system Postfix), smtp-source, opendkim, opendkim-genkey, bash >= 5.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

NLIST="10 50" SIZES="1k" M=2000 REPS=3 ONLY="" SETTLE=1 OUT=""
DOMAIN=example.org FROM=bench-sender@example.org TO=bench-rcpt@example.com TMO=600

bench_parse "$@"
command -v smtp-source >/dev/null || die "smtp-source not found (apt-get install postfix)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-dkim.XXXXXX")
trap bench_stop_all EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- servers and the milter
dkim_start "$DOMAIN" || die "OpenDKIM did not start"
server_ports

mw_config "
[delivery]
mode = \"queue\"

[[filters]]
name = \"dkim\"
milter = \"inet:$DKIM_PORT@127.0.0.1\""
if [[ " $SERVERS " == *" pf "* ]]; then
    pf_start "$PF_PORT" --milter "inet:127.0.0.1:$DKIM_PORT" || die "Postfix did not start"
fi
echo "# dkim.sh mailwright=127.0.0.1:$MW_PORT postfix=127.0.0.1:$PF_PORT opendkim=127.0.0.1:$DKIM_PORT m=$M reps=$REPS cpus=$(nproc) python=$PY" >&2

queued() {   # queued SERVER: how many messages its queue holds
    if [ "$1" = mw ]; then
        mw_cli queue list --json | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)))'
    else
        postqueue -j | wc -l
    fi
}

first_headers() {   # first_headers SERVER: the header section of one queued message
    local id
    if [ "$1" = mw ]; then
        id=$(mw_cli queue list --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)[0]["queue_id"])')
        mw_cli queue show "$id"
    else
        id=$(postqueue -j | head -1 | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["queue_id"])')
        postcat -hq "$id"
    fi
}


# ---------------------------------------------------------------- signed at all?
for srv in $SERVERS; do
    accept_prepare "$srv"
    if ! first_headers "$srv" > "$WORK/headers-$srv" 2>&1 || ! grep -q '^ *\(DKIM-Signature\|\["DKIM-Signature"\)' "$WORK/headers-$srv"; then
        accept_finish "$srv"
        die "no DKIM-Signature on a message queued by $srv: $(head -c 2000 "$WORK/headers-$srv")"
    fi
    echo "# $srv queued a signed message: $(grep -m1 -o 'DKIM-Signature.\{0,60\}' "$WORK/headers-$srv")" >&2
    accept_finish "$srv"
done

# ---------------------------------------------------------------- runs
declare -A RATE CPU DK
for size in $SIZES; do
    bytes=$(bytes_of "$size")
    for n in $NLIST; do
        declare -A runs=() cpus=() dkims=()
        for rep in $(seq 1 "$REPS"); do
            for srv in $SERVERS; do
                accept_prepare "$srv"
                c0=$(cpu_snap); k0=$(proc_ticks "$DKIM_PID")
                secs=$(source_run "$(port_of "$srv")" "$n" "$M" "$bytes" "$FROM" "$TO")
                c1=$(cpu_snap); k1=$(proc_ticks "$DKIM_PID")
                got=$(queued "$srv")
                accept_finish "$srv"
                if [ "$secs" = fail ] || [ "$got" -ne $(( M + 100 )) ]; then
                    echo "# run dkim $srv n=$n size=$size rep=$rep FAILED: queued $got of $(( M + 100 )); $(tail -1 "$WORK/source.err")" >&2
                    continue
                fi
                r=$(calc %.1f "$M / $secs"); c=$(cpu_ms "$c0" "$c1" "$M"); k=$(ticks_ms "$k0" "$k1" "$M")
                runs[$srv]="${runs[$srv]:-} $r"; cpus[$srv]="${cpus[$srv]:-} $c"; dkims[$srv]="${dkims[$srv]:-} $k"
                echo "# run dkim $srv n=$n size=$size rep=$rep secs=$secs msgs_per_s=$r cpu_ms_per_msg=$c opendkim_cpu_ms_per_msg=$k" >&2
            done
        done
        for srv in $SERVERS; do
            RATE[$srv,$size,$n]=$(echo "${runs[$srv]:-}" | median)
            CPU[$srv,$size,$n]=$(echo "${cpus[$srv]:-}" | median)
            DK[$srv,$size,$n]=$(echo "${dkims[$srv]:-}" | median)
            echo "# dkim $srv n=$n size=$size msgs_per_s=${RATE[$srv,$size,$n]} runs=$(echo ${runs[$srv]:-} | tr ' ' /)" >&2
        done
        unset runs cpus dkims
    done
done

# ---------------------------------------------------------------- report
report() {
    echo "## Mailwright vs Postfix: accept with OpenDKIM signing ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, smtp-source, one connection per message, m=$M, median of $REPS)"
    echo
    echo "| size | sessions | Mailwright msgs/s | Postfix msgs/s | ratio MW/PF | CPU ms/msg MW | CPU ms/msg PF | OpenDKIM CPU ms/msg with MW | with PF |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for size in $SIZES; do for n in $NLIST; do
        a=${RATE[mw,$size,$n]:-NA} b=${RATE[pf,$size,$n]:-NA}
        echo "| $size | $n | $a | $b | $(ratio "$a" "$b") | ${CPU[mw,$size,$n]:-NA} | ${CPU[pf,$size,$n]:-NA} | ${DK[mw,$size,$n]:-NA} | ${DK[pf,$size,$n]:-NA} |"
    done; done
}
report
[ -z "$OUT" ] || report > "$OUT"
