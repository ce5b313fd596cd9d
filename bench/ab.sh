#!/usr/bin/env bash
# bench/ab.sh - two versions of Mailwright against each other, one lone session at a time,
# in blocks A B B A: which step of a session a change moves, beyond the machine's drift.
#
# A and B are git revisions of this repository (each checked out into a detached worktree
# under the run's temp dir, removed at the end) or directories holding a source tree (with
# src/mailwright; a throwaway change is easiest to measure that way). Each run starts a fresh
# daemon of one version (a fresh queue, as bench/phases.sh) and runs this tree's
# bench/phases.py against it: 20 sessions to warm it up, then COUNT sessions one after
# another, no pipelining. With --relay 1 (the default) the daemon relays to an smtp-sink
# (as bench/e2e.sh) and the probe also times the sink's receipt of each message: `arrival`
# from the 221 until then, `e2e` from the connection until then, as e2e_probe.py reads end
# to end. A block is four runs, A B B A, so that a steady drift of the machine's speed
# (seen here at 20-30% within minutes) cancels within a block. Prints a Markdown table, per
# step: the median of A's runs, of B's, the median of the blocks' differences mean(A) -
# mean(B) (positive: B is faster) and each block's difference; the runs' lines go to stderr.
#
# Usage: bench/ab.sh [options] A B
#   --blocks N       blocks of four runs, default 10
#   -m COUNT         measured sessions per run, default 200
#   --sizes SIZE     the message size (one), default 100k
#   --relay 0|1      relay to smtp-sink (default 1) or accept only (delivery.mode "queue")
#   --settle SEC     pause before each run, default 0.2
#   --out FILE       also write the table to FILE
# Environment: MW_PYTHON, MW_WORKERS (default "auto") and MW_CPU_AFFINITY as for
# bench/phases.sh. Needs bash >= 5 and smtp-sink for --relay 1; Postfix is not started.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

[ $# -ge 2 ] || usage 2
VERSION_A=${*: -2:1} VERSION_B=${*: -1}
set -- "${@:1:$#-2}"
SIZES="100k" M=200 REPS=1 ONLY="mw" SETTLE=0.2 OUT="" RELAY=1 BLOCKS=10
bench_option() {
    case "$1" in
        --relay) RELAY=$2;;
        --blocks) BLOCKS=$2;;
        *) return 1;;
    esac
}
bench_parse "$@"
[ "$SERVERS" = mw ] || die "only Mailwright's versions are measured (no --only pf)"
[[ "$SIZES" != *" "* ]] || die "--sizes takes one size here"
[[ "$BLOCKS" =~ ^[1-9][0-9]*$ ]] || die "--blocks takes a positive number"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-ab.XXXXXX")
cleanup() { bench_stop_all; git -C "$ROOT" worktree prune 2>/dev/null; }
trap cleanup EXIT
trap 'exit 130' INT TERM

tree_of() {   # tree_of VERSION NAME: a directory with src/mailwright for VERSION
    local version=$1 name=$2
    if [ -d "$version/src/mailwright" ]; then
        (cd "$version" && pwd)
        return
    fi
    git -C "$ROOT" rev-parse --verify --quiet "$version^{commit}" > /dev/null \
        || die "$version is neither a source tree nor a revision of $ROOT"
    git -C "$ROOT" worktree add --quiet --detach "$WORK/$name" "$version" > /dev/null 2>&1 \
        || die "could not check out $version"
    echo "$WORK/$name"
}
describe() {   # describe TREE: its commit, "+ changes" when the work tree differs from it
    local commit
    commit=$(git -C "$1" rev-parse --short HEAD 2>/dev/null) || { echo "$1"; return; }
    if git -C "$1" diff --quiet HEAD 2>/dev/null; then echo "$commit"; else echo "$commit + changes"; fi
}
TREE_A=$(tree_of "$VERSION_A" a) || exit 2
TREE_B=$(tree_of "$VERSION_B" b) || exit 2

if [ "$RELAY" = 1 ]; then
    command -v smtp-sink > /dev/null || die "smtp-sink needed (apt-get install postfix)"
    relay_setup
    COUNTER=(--counter-file "$WORK/sink-mw.out")
else
    server_ports
    mw_config '
[delivery]
mode = "queue"'
    COUNTER=()
fi
BYTES=$(bytes_of "$SIZES")
echo "# ab.sh A=$VERSION_A ($(describe "$TREE_A")) B=$VERSION_B ($(describe "$TREE_B")) size=$SIZES m=$M blocks=$BLOCKS relay=$RELAY workers=${MW_WORKERS:-auto} cpus=$(nproc)" >&2

run() {   # run NAME TREE: one daemon of TREE, warmed up, then the measured sessions (LINE)
    local name=$1 tree=$2
    sync; nap "$SETTLE"
    ROOT=$tree mw_start || die "Mailwright ($name) did not start"
    "$PY" "$HERE/phases.py" --mta "127.0.0.1:$MW_PORT" --count 20 --size "$BYTES" "${COUNTER[@]}" \
        > /dev/null || die "the probe failed against $name"
    LINE=$("$PY" "$HERE/phases.py" --mta "127.0.0.1:$MW_PORT" --count "$M" --size "$BYTES" \
        --label "$name" "${COUNTER[@]}") || die "the probe failed against $name"
    mw_stop
}

RUNS="$WORK/runs.txt"
: > "$RUNS"
for block in $(seq 1 "$BLOCKS"); do
    for name in a b b a; do
        if [ "$name" = a ]; then tree=$TREE_A; else tree=$TREE_B; fi
        run "$name" "$tree"
        echo "block=$block $LINE" | tee -a "$RUNS" >&2
    done
done

report() {
    echo "## A against B, one session at a time ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, workers=${MW_WORKERS:-auto}, $SIZES, $([ "$RELAY" = 1 ] && echo relaying || echo accept only), $BLOCKS blocks A B B A of $M sessions a run)"
    echo
    echo "A = $VERSION_A ($(describe "$TREE_A")), B = $VERSION_B ($(describe "$TREE_B")); ms, medians of the runs' medians; A - B > 0: B is faster"
    echo
    "$PY" - "$RUNS" <<'PY'
import statistics
import sys

rows = []
for text in open(sys.argv[1]):
    fields = dict(f.split("=", 1) for f in text.split() if "=" in f)
    rows.append(fields)
steps = ["connect", "ehlo", "mail", "rcpt", "data", "body", "quit", "total", "arrival", "e2e"]
names = {"body": "content→250", "total": "session", "data": "DATA", "quit": "QUIT"}
print("| step | A | B | A - B, median of blocks | each block |")
print("|---|---|---|---|---|")
blocks = sorted({r["block"] for r in rows}, key=int)
for step in steps:
    if step not in rows[0]:
        continue
    def of(label, block=None):
        return [float(r[step]) for r in rows
                if r["label"] == label and (block is None or r["block"] == block)]
    diffs = [statistics.mean(of("a", b)) - statistics.mean(of("b", b)) for b in blocks]
    each = " ".join(f"{d:+.2f}" for d in diffs)
    print(f"| {names.get(step, step)} | {statistics.median(of('a')):.3f} | "
          f"{statistics.median(of('b')):.3f} | {statistics.median(diffs):+.3f} | {each} |")
PY
}
report
[ -z "$OUT" ] || report > "$OUT"
