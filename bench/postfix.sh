#!/usr/bin/env bash
# bench/postfix.sh - the system Postfix as the reference server of the benchmarks.
#
#   bench/postfix.sh start PORT [--relay SINKPORT] [--milter SOCKET]
#                                  listen on 127.0.0.1:PORT only, accept every message and
#                                  put it on the hold queue (accept-only: nothing is
#                                  delivered), default settings otherwise; prints the
#                                  master's PID. --relay: deliver instead, everything to
#                                  [127.0.0.1]:SINKPORT (relayhost, no DNS). --milter:
#                                  smtpd_milters = SOCKET (e.g. inet:127.0.0.1:8891),
#                                  milter_default_action = tempfail, milter_protocol = 6
#   bench/postfix.sh stop          kill the master by its PID and wait until it is gone
#   bench/postfix.sh empty         delete every queued message (postsuper -d ALL)
#   bench/postfix.sh restore       put /etc/postfix/main.cf and master.cf back as they were
#                                  before "start" (a main.cf that did not exist is removed)
#
# "start" saves the original files once (as *.mw-bench-orig, or a marker when main.cf did
# not exist); "restore" puts them back and deletes the saved copies. No service manager is
# used: "postfix start" launches the master, and "stop" signals that PID.
set -u -o pipefail
PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
ETC=/etc/postfix
PIDFILE=/var/spool/postfix/pid/master.pid
ABSENT=$ETC/main.cf.mw-bench-absent    # marker: there was no main.cf before "start"

die() { echo "postfix.sh: $*" >&2; exit 2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
master_pid() { [ -s "$PIDFILE" ] && tr -d ' \n' < "$PIDFILE"; return 0; }
running() { local pid; pid=$(master_pid); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

save_originals() {
    if [ ! -e "$ETC/main.cf.mw-bench-orig" ] && [ ! -e "$ABSENT" ]; then
        if [ -e "$ETC/main.cf" ]; then cp -p "$ETC/main.cf" "$ETC/main.cf.mw-bench-orig"; else : > "$ABSENT"; fi
    fi
    [ -e "$ETC/master.cf.mw-bench-orig" ] || cp -p "$ETC/master.cf" "$ETC/master.cf.mw-bench-orig"
}

start() {
    local port=${1:?PORT needed} sink="" milter=""
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --relay) sink=${2:?SINKPORT needed}; shift 2;;
            --milter) milter=${2:?SOCKET needed}; shift 2;;
            *) die "start: unknown option $1";;
        esac
    done
    command -v postconf >/dev/null || die "postfix is not installed"
    running && die "a Postfix master is already running (pid $(master_pid)); stop it first"
    port_open "$port" && die "something already listens on 127.0.0.1:$port"
    save_originals
    # start from the original main.cf, or from compiled-in defaults when there was none
    if [ -e "$ABSENT" ]; then
        echo "compatibility_level = $(postconf -dh mail_version | cut -d. -f1,2)" > "$ETC/main.cf"
    else
        cp "$ETC/main.cf.mw-bench-orig" "$ETC/main.cf"
    fi
    cp "$ETC/master.cf.mw-bench-orig" "$ETC/master.cf"
    # no smtpd on port 25; one on 127.0.0.1:PORT
    sed -i 's/^smtp \( *\)inet /#smtp \1inet /' "$ETC/master.cf"
    printf '127.0.0.1:%s inet n - y - - smtpd\n' "$port" >> "$ETC/master.cf"
    postconf -e 'inet_interfaces = 127.0.0.1' 'inet_protocols = ipv4' 'mydestination = localhost' \
        'myhostname = postfix-under-test.localdomain' 'smtpd_tls_security_level = none' \
        'smtp_tls_security_level = none' 'smtp_dns_support_level = disabled' \
        'maillog_file = /var/log/postfix-bench.log' \
        || die "postconf failed"
    if [ -n "$sink" ]; then   # as /work/shared/bench/servers.sh postfix-start PORT SINKPORT
        postconf -e "relayhost = [127.0.0.1]:$sink" 'default_transport = smtp' \
            'relay_transport = relay' 'smtp_host_lookup = native' 'lmtp_host_lookup = native' \
            || die "postconf failed"
    else
        postconf -e 'relayhost = [127.0.0.1]:9' \
            'smtpd_end_of_data_restrictions = check_client_access static:HOLD' \
            || die "postconf failed"
    fi
    if [ -n "$milter" ]; then
        postconf -e "smtpd_milters = $milter" 'milter_default_action = tempfail' \
            'milter_protocol = 6' || die "postconf failed"
    fi
    [ -x /usr/lib/postfix/configure-instance.sh ] && /usr/lib/postfix/configure-instance.sh >/dev/null 2>&1
    postfix check >/dev/null 2>&1 || die "postfix check failed: $(postfix check 2>&1 | tail -1)"
    postfix start >/dev/null 2>&1 || die "postfix start failed"
    local i
    for i in $(seq 1 100); do port_open "$port" && break; sleep 0.1; done
    port_open "$port" || die "postfix does not listen on 127.0.0.1:$port"
    master_pid; echo
}

stop() {
    local pid i
    pid=$(master_pid)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid"
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    die "postfix master $pid did not stop"
}

restore() {
    if [ -e "$ABSENT" ]; then
        rm -f "$ETC/main.cf" "$ABSENT"
    elif [ -e "$ETC/main.cf.mw-bench-orig" ]; then
        mv -f "$ETC/main.cf.mw-bench-orig" "$ETC/main.cf"
    fi
    [ -e "$ETC/master.cf.mw-bench-orig" ] && mv -f "$ETC/master.cf.mw-bench-orig" "$ETC/master.cf"
    return 0
}

case "${1:-}" in
    start) shift; start "$@";;
    stop) stop;;
    empty) postsuper -d ALL >/dev/null 2>&1 || true;;
    restore) restore;;
    *) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2;;
esac
