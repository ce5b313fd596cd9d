#!/usr/bin/env bash
# bench/all.sh - every side-by-side benchmark against Postfix, one after the other.
#
# Runs bench/accept.sh, bench/relay.sh and bench/dkim.sh (see bench/README.md); each prints
# its Markdown table on stdout and its per-run lines on stderr. Arguments that all three
# take are passed on to each (-r REPS, -m COUNT, --settle SEC, --only mw|pf); --out DIR
# also writes the tables to DIR/accept.md, DIR/relay.md and DIR/dkim.md. A failing script
# does not stop the others; the exit status is that of the last failure.
#
# Usage: bench/all.sh [-r REPS] [-m COUNT] [--settle SEC] [--only mw|pf] [--out DIR]
#        [--skip accept,relay,dkim]
# Needs what the three need: root, smtp-source, smtp-sink, opendkim, bash >= 5.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARGS=() OUTDIR="" SKIP=""
while [ $# -gt 0 ]; do
    case "$1" in
        -r|-m|--settle|--only) ARGS+=("$1" "$2"); shift 2;;
        --out) OUTDIR=$2; shift 2;;
        --skip) SKIP=$2; shift 2;;
        -h|--help) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0;;
        *) echo "all.sh: unknown argument $1 (see --help)" >&2; exit 2;;
    esac
done
[ -z "$OUTDIR" ] || mkdir -p "$OUTDIR"
status=0
for bench in accept relay dkim; do
    [[ ",$SKIP," == *",$bench,"* ]] && continue
    out=()
    [ -z "$OUTDIR" ] || out=(--out "$OUTDIR/$bench.md")
    "$HERE/$bench.sh" "${ARGS[@]}" "${out[@]}" || status=$?
    echo
done
exit "$status"
