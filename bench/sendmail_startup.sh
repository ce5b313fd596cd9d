#!/bin/sh
# How long `sendmail` takes to start, and to queue a message through a running daemon.
#
#   bench/sendmail_startup.sh [runs]
#
# Measures, with hyperfine (warm caches):
#   1. the interpreter alone (python -c pass): the floor;
#   2. start-up plus every import of the default (queue a message) path, nothing else;
#   3. `sendmail -bV`: start-up, imports of the entry module, argument parsing;
#   4. `sendmail -i user < message` against a running daemon: the whole submission,
#      answered only after the daemon's durable queue commit (fsync).
# Target (issue 6): (2) under 50 ms. Also prints the ten slowest imports of (2).
set -eu
RUNS=${1:-40}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-/work/main/.venv/bin/python}
T=$(mktemp -d /tmp/mwbenchXXXX)
trap 'kill "$DAEMON" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$T"' EXIT INT TERM

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$T/mailwright.toml" <<CONF
hostname = "bench.test"
[[listeners]]
address = "127.0.0.1"
port = $PORT
[queue]
directory = "$T/queue"
[service]
user = "root"   # when run by root: no service account needed to measure
CONF
# an entry point like the one pip installs for [project.scripts] sendmail
cat > "$T/sendmail" <<SCRIPT
#!$PY
import sys
from mailwright.cli.sendmail import main
sys.exit(main())
SCRIPT
chmod +x "$T/sendmail"
printf 'Subject: bench\n\nhello\n' > "$T/message"
export PYTHONPATH="$ROOT/src" MAILWRIGHT_CONFIG="$T/mailwright.toml"
# measure what an installed copy does: byte code compiled (pip compiles on install)
unset PYTHONDONTWRITEBYTECODE
$PY -m compileall -q "$ROOT/src/mailwright"

$PY -m mailwright serve 2>"$T/daemon.log" &
DAEMON=$!
while [ ! -S "$T/queue/submit.sock" ]; do
    kill -0 "$DAEMON" 2>/dev/null || { cat "$T/daemon.log"; exit 1; }
    sleep 0.1
done

IMPORTS='import sys, pwd, socket, tomllib
from mailwright.cli import sendmail, draft, submit
from mailwright.edge import localsmtp
from mailwright.config import lite
lite.load(None)'

# wall time suffers from other load on the machine; hyperfine also reports CPU time
# (User + System), which it does not, and the minimum, which is the unloaded figure
hyperfine -N --warmup 5 --runs "$RUNS" --export-markdown "$T/startup.md" \
    -n "python -c pass" "$PY -c pass" \
    -n "start-up + imports of the sendmail path" "$PY -c '$IMPORTS'" \
    -n "sendmail -bV" "$T/sendmail -bV"
hyperfine --warmup 5 --runs "$RUNS" --export-markdown "$T/submit.md" \
    -n "sendmail -i root < message (queued, fsynced)" "$T/sendmail -i root < $T/message"
cat "$T/startup.md" "$T/submit.md"
echo
echo "slowest imports of the sendmail path (cumulative microseconds):"
$PY -X importtime -c "$IMPORTS" 2>&1 | sort -t'|' -k2 -n | tail -10
