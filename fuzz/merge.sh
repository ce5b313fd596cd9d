#!/usr/bin/env bash
# Minimises fuzz corpora with libFuzzer's -merge=1: usage fuzz/merge.sh PYTHON TARGET...
#
# For each TARGET, fuzz/corpus/TARGET keeps its named files (seeds, fixed crash reproducers:
# people chose them) and, of the inputs the fuzzer added (named by the SHA-1 of their
# content), only those that reach code that the named files and the other kept inputs do
# not. The merge runs into a fresh directory first; the corpus is changed only when it
# succeeded in one attempt (a retry means an input crashed or the child could not run,
# and then nothing is touched). Prints the counts before and after. Reads no settings.
set -euo pipefail

python=$1
shift
hashed='.*/[0-9a-f]{40}'
status=0
for t in "$@"; do
  corpus=fuzz/corpus/$t
  work=$(mktemp -d)
  mkdir "$work/out"
  # the named files go in first: they are kept, and what they reach is no reason to keep more
  find "$corpus" -maxdepth 1 -type f -regextype posix-extended ! -regex "$hashed" \
    -exec cp -t "$work/out" {} +
  before=$(find "$corpus" -maxdepth 1 -type f | wc -l)
  named=$(find "$work/out" -type f | wc -l)
  if "$python" "fuzz/$t.py" -merge=1 -timeout=20 "$work/out" "$corpus" >"$work/log" 2>&1 \
    && grep -q 'MERGE-OUTER: successful in 1 attempt' "$work/log"; then
    find "$corpus" -maxdepth 1 -type f -regextype posix-extended -regex "$hashed" -delete
    find "$work/out" -type f -regextype posix-extended -regex "$hashed" \
      -exec cp -t "$corpus" {} +
    after=$(find "$corpus" -maxdepth 1 -type f | wc -l)
    echo "fuzz/$t: $before files -> $after ($named named, kept as they are)"
  else
    grep -v '^INFO: Instrumenting' "$work/log" | tail -n 20 >&2
    echo "fuzz/$t: merge failed, corpus left as it was" >&2
    status=1
  fi
  rm -rf "$work"
done
exit "$status"
