# bench/lib.sh - what the benchmark scripts share: one way of starting each server and peer.
#
# Sourced (not run) by the benchmark scripts (accept, relay, dkim, auth, cluster, e2e,
# phases, profile, ab), after they set HERE (this directory) and ROOT (the tree whose src/
# mw_start runs). Provides:
#   numbers   bytes_of SIZE, median (stdin), calc FMT EXPR, ratio A B, cpu_snap / cpu_ms A B N
#             (busy CPU of the whole machine per message), proc_ticks PID / ticks_ms A B N
#             (one process's CPU per message), mib KB, status_kb PID FIELD
#   ports     free_port, port_open PORT, wait_port PORT
#   python    bench_python: sets PY (MW_PYTHON, else .venv/bin/python of the tree, else
#             /work/main/.venv/bin/python)
#   mw_*      Mailwright from this tree's src/ on 127.0.0.1:$MW_PORT, config and queue under
#             $WORK, log level WARNING, high connection limits, MW_WORKERS worker processes
#             (default "auto", as the daemon's): mw_config [TOML...] writes
#             the config (extra TOML text appended), mw_start starts it on a fresh queue
#             (MW_LAUNCH=1: through bench/launch.py, whose MW_* switches then apply),
#             mw_stop stops it by PID
#   pf_*      the system Postfix through bench/postfix.sh: pf_start PORT [postfix.sh
#             options], pf_empty, and pf_cleanup (stop, restore /etc/postfix) for the trap
#   sink_*    smtp-sink on a fresh free port each (it binds with SO_REUSEPORT: a leftover
#             sink on a reused port would silently take traffic): sink_start NAME sets
#             SINK_PORT[NAME]; sink_count NAME sets SINK_GOT[NAME] to the messages it has
#             received so far (its -c counters); sink_wait NAME COUNT SECONDS waits for a
#             count. Both keep state in this shell: call them directly, never in $(...)
#   dkim_*    OpenDKIM in signing mode (key from opendkim-genkey under $WORK, RequireSafeKeys
#             no) on a free port: dkim_start DOMAIN sets DKIM_PORT
#   accept_prepare SERVER / accept_finish SERVER  before and after a measured accept-only
#             run of mw or pf (the script defines port_of SERVER): a fresh, warm Mailwright
#             or Postfix, and afterwards an empty queue, synced
#   bench_stop_all  stops everything above that is running (by PID) and removes $WORK
#   bench_parse "$@"  the options every benchmark takes (-n --sizes -m -r --only --settle
#             --out -h; a script's own through a bench_option NAME VALUE function it may
#             define), sets SERVERS, checks Python, bash 5 and root for Postfix; usage and
#             die use the calling script's name and header comment
# Trusts its caller. Reads MW_PYTHON, MW_LAUNCH, MW_WORKERS, MW_CPU_AFFINITY (server.cpu_affinity,
# default auto) and TMPDIR from the environment.

PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

# ---------------------------------------------------------------- options
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "$(basename "$0"): $*" >&2; exit 2; }

bench_parse() {
    while [ $# -gt 0 ]; do
        case "$1" in
            -n) NLIST=$2; shift 2;;
            --sizes) SIZES=$2; shift 2;;
            -m) M=$2; shift 2;;
            -r) REPS=$2; shift 2;;
            --only) ONLY=$2; shift 2;;
            --settle) SETTLE=$2; shift 2;;
            --out) OUT=$2; shift 2;;
            -h|--help) usage 0;;
            *) if [ $# -ge 2 ] && declare -F bench_option >/dev/null && bench_option "$1" "$2"; then
                   shift 2
               else
                   die "unknown argument $1 (see --help)"
               fi;;
        esac
    done
    case "$ONLY" in ""|mw|pf) ;; *) die "--only takes mw or pf";; esac
    SERVERS="mw pf"; [ -n "$ONLY" ] && SERVERS=$ONLY
    bench_python || die "no Python with Mailwright's dependencies (set MW_PYTHON)"
    [ "${BASH_VERSINFO[0]}" -ge 5 ] || die "bash >= 5 needed (EPOCHREALTIME)"
    [[ " $SERVERS " != *" pf "* ]] || [ "$(id -u)" -eq 0 ] || die "Postfix needs root (or use --only mw)"
}

# ---------------------------------------------------------------- numbers
bytes_of() { case "$1" in *[kK]) echo $(( ${1%[kK]} * 1024 ));; *[mM]) echo $(( ${1%[mM]} * 1048576 ));; *) echo "$1";; esac; }
median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{v[NR]=$1} END{ if(NR==0){print "NA"; exit} if(NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2 }'; }
calc() { awk "BEGIN{ printf \"$1\", $2 }"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="NA" || b=="NA" || b==0) print "NA"; else printf "%.2f", a/b }'; }
cpu_snap() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat; }
cpu_ms() { awk -v a="$1" -v b="$2" -v m="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.2f", ((y[1]-x[1])-(y[2]-x[2]))*1000/hz/m}'; }
proc_ticks() { awk '{ sub(/^[^)]*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null; }   # utime+stime, all threads
ticks_ms() { awk -v a="$1" -v b="$2" -v m="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)*1000/hz/m}'; }
status_kb() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status" 2>/dev/null; }
mib() { awk -v k="$1" 'BEGIN{ if (k=="") print "NA"; else printf "%.1f", k/1024 }'; }

# ---------------------------------------------------------------- ports and waiting
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# a timed wait without forking sleep(1): read from a pipe nobody writes to
exec {_NAP_FD}<> <(:)
nap() { read -r -t "$1" -u "$_NAP_FD" _ || true; }
wait_port() { local i; for i in $(seq 1 200); do port_open "$1" && return 0; nap 0.05; done; return 1; }

bench_python() {
    PY=${MW_PYTHON:-}
    local p
    [ -n "$PY" ] || for p in "$ROOT/.venv/bin/python" /work/main/.venv/bin/python; do [ -x "$p" ] && { PY=$p; break; }; done
    [ -n "$PY" ]
}

# ---------------------------------------------------------------- Mailwright
MW_PID="" MW_PORT=""
mw_config() {   # mw_config [EXTRA_TOML]: $WORK/mailwright.toml for 127.0.0.1:$MW_PORT
    cat > "$WORK/mailwright.toml" <<EOF
hostname = "mailwright-under-test.localdomain"

[[listeners]]
address = "127.0.0.1"
port = $MW_PORT
kind = "smtp"

[server]
workers = ${MW_WORKERS:-\"auto\"}
cpu_affinity = "${MW_CPU_AFFINITY:-auto}"
max_connections = 4000
max_connections_per_ip = 4000
max_message_size = ${MW_MAX_SIZE:-209715200}

[queue]
directory = "$WORK/queue"

[service]
user = "root"   # stay root when run by root: no service account needed to measure
${1:-}
EOF
}

mw_start() {   # a fresh queue every time
    rm -rf "$WORK/queue"
    local run=(-m mailwright)
    [ "${MW_LAUNCH:-0}" = 1 ] && run=("$HERE/launch.py")
    PYTHONPATH="$ROOT/src" "$PY" "${run[@]}" --config "$WORK/mailwright.toml" serve \
        --log-level WARNING >> "$WORK/mailwright.log" 2>&1 &
    MW_PID=$!
    local i
    for i in $(seq 1 200); do port_open "$MW_PORT" && return 0; kill -0 "$MW_PID" 2>/dev/null || break; nap 0.05; done
    echo "Mailwright did not start: $(tail -3 "$WORK/mailwright.log")" >&2
    return 1
}

mw_stop() {
    [ -n "$MW_PID" ] || return 0
    kill "$MW_PID" 2>/dev/null
    wait "$MW_PID" 2>/dev/null
    MW_PID=""
}

mw_cli() {   # mw_cli ARGS...: the mailwright command line against the benchmark's config
    PYTHONPATH="$ROOT/src" "$PY" -m mailwright --config "$WORK/mailwright.toml" "$@"
}

# ---------------------------------------------------------------- Postfix
PF_STARTED=0
pf_start() {   # pf_start PORT [bench/postfix.sh start options]
    PF_STARTED=1
    "$HERE/postfix.sh" start "$@" > /dev/null
}
pf_empty() { "$HERE/postfix.sh" empty; }
pf_cleanup() {
    [ "$PF_STARTED" -eq 1 ] || return 0
    "$HERE/postfix.sh" empty; "$HERE/postfix.sh" stop; "$HERE/postfix.sh" restore
    PF_STARTED=0
}

# ---------------------------------------------------------------- smtp-sink
declare -A SINK_PID=() SINK_PORT=() SINK_FD=() SINK_GOT=() SINK_BUF=()
sink_start() {   # sink_start NAME: a new smtp-sink on a fresh port, counting messages
    local name=$1 port out
    port=$(free_port)
    out="$WORK/sink-$name.out"
    : > "$out"
    local user=(); [ "$(id -u)" -eq 0 ] && user=(-u nobody)   # it refuses to run as root
    smtp-sink "${user[@]}" -c -h "sink-$name.test" "127.0.0.1:$port" 1024 > "$out" 2> "$WORK/sink-$name.err" &
    SINK_PID[$name]=$!   # smtp-sink itself: it does not fork
    SINK_PORT[$name]=$port SINK_GOT[$name]=0 SINK_BUF[$name]=""
    wait_port "$port" || { echo "smtp-sink did not start: $(cat "$WORK/sink-$name.err")" >&2; return 1; }
    local fd; exec {fd}< "$out"; SINK_FD[$name]=$fd
}

sink_count() {   # sink_count NAME: SINK_GOT[NAME] = messages it has received so far
    local name=$1 rec buf=${SINK_BUF[$1]}
    # -c writes "sess=.. quit=.. mesg=N" records separated by CR; read the complete ones
    while IFS= read -r -d $'\r' -u "${SINK_FD[$name]}" rec; do
        rec="$buf$rec"; buf=""
        case "$rec" in *mesg=*) rec=${rec##*mesg=}; SINK_GOT[$name]=${rec%% *};; esac
    done
    SINK_BUF[$name]="$buf$rec"   # a partial record at the end of the file
}

sink_wait() {   # sink_wait NAME COUNT SECONDS: until it has COUNT messages in all
    local name=$1 want=$2 end=$(( EPOCHSECONDS + $3 ))
    while [ "$EPOCHSECONDS" -lt "$end" ]; do
        sink_count "$name"
        [ "${SINK_GOT[$name]}" -ge "$want" ] && return 0
        kill -0 "${SINK_PID[$name]}" 2>/dev/null || return 1
        nap 0.005
    done
    return 1
}

sink_stop() {
    local name=$1
    [ -n "${SINK_PID[$name]:-}" ] || return 0
    kill "${SINK_PID[$name]}" 2>/dev/null
    wait "${SINK_PID[$name]}" 2>/dev/null
    local fd=${SINK_FD[$name]:-}
    [ -n "$fd" ] && exec {fd}<&-
    unset "SINK_PID[$name]" "SINK_FD[$name]"
}

# ---------------------------------------------------------------- OpenDKIM
DKIM_PID="" DKIM_PORT=""
dkim_start() {   # dkim_start DOMAIN: sign mail from 127.0.0.1 with From: @DOMAIN
    local domain=$1 dir="$WORK/opendkim"
    command -v opendkim >/dev/null && command -v opendkim-genkey >/dev/null \
        || { echo "opendkim and opendkim-genkey needed (apt-get install opendkim opendkim-tools)" >&2; return 1; }
    mkdir -p "$dir"
    [ -s "$dir/bench.private" ] || opendkim-genkey -b 2048 -d "$domain" -s bench -D "$dir" || return 1
    DKIM_PORT=$(free_port)
    cat > "$dir/opendkim.conf" <<EOF
Syslog                  no
Background              no
Mode                    s
Domain                  $domain
Selector                bench
KeyFile                 $dir/bench.private
Socket                  inet:$DKIM_PORT@127.0.0.1
Canonicalization        relaxed/simple
RequireSafeKeys         no
EOF
    opendkim -f -x "$dir/opendkim.conf" > "$dir/opendkim.log" 2>&1 &
    DKIM_PID=$!
    wait_port "$DKIM_PORT" || { echo "opendkim did not start: $(tail -3 "$dir/opendkim.log")" >&2; return 1; }
}

dkim_stop() {   # libmilter daemons take a few seconds to exit on SIGTERM
    [ -n "$DKIM_PID" ] || return 0
    kill "$DKIM_PID" 2>/dev/null
    wait "$DKIM_PID" 2>/dev/null
    DKIM_PID=""
}

# ---------------------------------------------------------------- load and clean-up
source_run() {   # source_run PORT SESSIONS COUNT BYTES FROM TO: elapsed seconds, or "fail"
    local t0 t1
    t0=$EPOCHREALTIME
    if ! timeout "${TMO:-600}" smtp-source -s "$2" -m "$3" -l "$4" -f "$5" -t "$6" \
        "127.0.0.1:$1" > /dev/null 2> "$WORK/source.err"; then
        echo fail; return
    fi
    t1=$EPOCHREALTIME
    calc %.4f "$t1 - $t0"
}

accept_prepare() {   # a clean, warm server before a measured run
    if [ "$1" = mw ]; then mw_start || die "Mailwright did not start"; fi
    smtp-source -s 10 -m 100 -l 1024 -f "$FROM" -t "$TO" "127.0.0.1:$(port_of "$1")" >/dev/null 2>&1 \
        || die "warm-up of $1 failed"
    sync
    sleep "$SETTLE"
}

# Empty the queue right after a run, and sync, so that the deletion (block freeing, discard)
# is not paid for by whichever server runs next.
accept_finish() {
    if [ "$1" = mw ]; then
        mw_stop; rm -rf "$WORK/queue"
    else
        pf_empty
    fi
    sync
}

bench_stop_all() {
    mw_stop
    local name
    for name in "${!SINK_PID[@]}"; do sink_stop "$name"; done
    dkim_stop
    pf_cleanup
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}

# ---------------------------------------------------------------- PostgreSQL (bench/cluster.sh)
# pg_start: a private PostgreSQL under $WORK/pg ($WORK must be searchable by the postgres
# user): initdb (trust, user postgres), a free loopback port, fsync on, synchronous_commit
# on, pg_stat_statements loaded; sets PG_BIN, PG_PORT, PG_PID (the postmaster) and PG_URL
# (the database "mail", created by the caller). pg_stop stops it (pg_ctl, fast).
# pg_ticks: the server's CPU ticks so far (the postmaster, the children it has reaped, and
# its live processes), for ticks_ms.
PG_PID="" PG_PORT="" PG_URL="" PG_BIN="" PG_DIR=""
pg_start() {
    PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -1)
    [ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL not found (apt-get install postgresql)" >&2; return 1; }
    PG_DIR="$WORK/pg"
    mkdir -p "$PG_DIR" && chown postgres "$PG_DIR"
    runuser -u postgres -- "$PG_BIN/initdb" -A trust -U postgres -D "$PG_DIR/data" \
        > "$PG_DIR/initdb.log" 2>&1 || { echo "initdb failed: $(tail -3 "$PG_DIR/initdb.log")" >&2; return 1; }
    PG_PORT=$(free_port)
    runuser -u postgres -- "$PG_BIN/postgres" -D "$PG_DIR/data" -p "$PG_PORT" -h 127.0.0.1 \
        -k "$PG_DIR" -c fsync=on -c synchronous_commit=on -c max_connections=200 \
        -c shared_preload_libraries=pg_stat_statements > "$PG_DIR/server.log" 2>&1 &
    local i
    for i in $(seq 1 400); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
        nap 0.05
    done
    PG_PID=$(head -1 "$PG_DIR/data/postmaster.pid" 2>/dev/null)
    [ -n "$PG_PID" ] && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" \
        || { echo "PostgreSQL did not start: $(tail -3 "$PG_DIR/server.log")" >&2; return 1; }
    PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/mail"
}

pg_stop() {
    [ -n "$PG_PID" ] || return 0
    runuser -u postgres -- "$PG_BIN/pg_ctl" stop -D "$PG_DIR/data" -m fast -w -t 30 > /dev/null 2>&1
    PG_PID=""
}

pg_ticks() {
    [ -n "$PG_PID" ] || { echo 0; return; }
    local t c
    t=$(awk '{ sub(/^[^)]*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$PG_PID/stat" 2>/dev/null)
    for c in $(pgrep -P "$PG_PID"); do t=$(( ${t:-0} + $(proc_ticks "$c" || echo 0) )); done
    echo "${t:-0}"
}

# ---------------------------------------------------------------- relaying, both servers
server_ports() {   # MW_PORT and PF_PORT, two free loopback ports, and port_of SERVER
    MW_PORT=$(free_port)
    PF_PORT=$(free_port)
    [ "$PF_PORT" = "$MW_PORT" ] && PF_PORT=$(free_port)
    port_of() { if [ "$1" = mw ]; then echo "$MW_PORT"; else echo "$PF_PORT"; fi; }
}

relay_setup() {   # ports, one smtp-sink per server, Mailwright configured to relay to its
    # sink (background delivery, no STARTTLS) and Postfix started relaying to its own;
    # Mailwright itself is started by the caller (mw_start). Sets MW_PORT, PF_PORT, port_of.
    server_ports
    local srv
    for srv in $SERVERS; do sink_start "$srv" || die "smtp-sink for $srv did not start"; done
    if [[ " $SERVERS " == *" mw "* ]]; then
        mw_config "
[routing]
smarthost = \"[127.0.0.1]:${SINK_PORT[mw]}\"

[delivery]
mode = \"background\"
tls_default = \"none\""
    fi
    if [[ " $SERVERS " == *" pf "* ]]; then
        pf_start "$PF_PORT" --relay "${SINK_PORT[pf]}" || die "Postfix did not start"
    fi
}
