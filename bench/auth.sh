#!/usr/bin/env bash
# bench/auth.sh - the cost of the inbound authentication checks, side by side in one run.
#
# Three servers take turns run by run: Mailwright without checks ("mw"), Mailwright with
# every inbound check on ("mw+auth": SPF for MAIL FROM and HELO, the dkim_verify filter,
# ARC verification, and DMARC when this tree has a [dmarc] section) and, for reference, the
# system Postfix accepting only (bench/postfix.sh, as bench/accept.sh: every message put on
# hold, no checks). Both Mailwright configs are the same otherwise: delivery.mode = "queue",
# relay.networks = [] (loopback clients are not trusted, so they are checked: trusted
# clients never are) and relay.domains = the recipient's domain, [dns] pointing at the
# script's own dnsmasq. That dnsmasq (a free loopback port, TTL 3600, --local zones so
# unknown names answer NXDOMAIN) serves what bench/auth_mail.py makes: SPF
# "v=spf1 ip4:127.0.0.0/8 -all" for the sender's domain and for the HELO name
# bench-client.example.org, DMARC p=none, and one 2048-bit RSA DKIM key for example.org and
# forwarder.example.net; plus PTR and A records of the client.
#
# Load: smtp-source -F FILE (the same client and file for all three servers), one connection
# per message, HELO bench-client.example.org, from bench-sender@example.org. Message kinds
# (--mails): plain (1 KiB, unsigned: dkim=none, arc=none), dkim (the same with a
# DKIM-Signature made by dkimpy: one key lookup and RSA verification), arc (dkim plus a
# forwarder's Authentication-Results and ARC set i=1: two more RSA verifications). SPF and
# DMARC pass for all. Before the runs, one message of each kind goes through mw+auth and its
# Authentication-Results must show spf=pass, and dkim=pass / arc=pass / dmarc=pass where
# expected. Each run starts on an empty queue after a 100-message warm-up, a sync and a
# pause; afterwards the queue must hold every message, and it is emptied and synced.
# Output (stdout, Markdown): msgs/s, the machine's busy CPU ms per message (from
# /proc/stat: client, servers, dnsmasq and kernel), the ratio to Postfix, and the CPU ms per
# message the checks add (mw+auth minus mw, medians). Per-run lines go to stderr.
# Everything started is stopped by PID on exit and /etc/postfix is restored.
#
# Usage: bench/auth.sh [options]
#   -n LIST          concurrent sessions, default "10"
#   -m COUNT         messages per run, default 2000
#   -r REPS          repetitions, default 3
#   --mails LIST     message kinds, default "plain dkim arc"
#   --only mw|pf     mw: both Mailwright configs only (no root needed); pf: Postfix only
#   --settle SEC     pause before each run, default 1
#   --out FILE       also write the table to FILE
#   -h, --help
# Environment: MW_PYTHON (see bench/lib.sh; needs dkimpy and cryptography, as the test
# venv has), MW_WORKERS, MW_LAUNCH=1 (start through bench/launch.py).
# Needs root (the system Postfix), smtp-source, dnsmasq (dnsmasq-base), bash >= 5.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

NLIST="10" SIZES="1k" M=2000 REPS=3 ONLY="" SETTLE=1 OUT="" MAILS="plain dkim arc"
DOMAIN=example.org FROM=bench-sender@example.org TO=bench-rcpt@example.com TMO=600
HELO=bench-client.example.org
bench_option() { case "$1" in --mails) MAILS=$2;; *) return 1;; esac; }

bench_parse "$@"
command -v smtp-source >/dev/null || die "smtp-source not found (apt-get install postfix)"
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
[ -x "$DNSMASQ" ] || die "dnsmasq not found (apt-get install dnsmasq-base)"
for mail in $MAILS; do case "$mail" in plain|dkim|arc) ;; *) die "--mails: plain, dkim or arc";; esac; done
case "$ONLY" in mw) SERVERS="mw mwauth";; pf) SERVERS="pf";; *) SERVERS="mw mwauth pf";; esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mw-auth.XXXXXX")
chmod 711 "$WORK"   # dnsmasq drops to nobody (it opens its log before)
DNS_PID=""
auth_stop_all() {
    if [ -n "$DNS_PID" ]; then kill "$DNS_PID" 2>/dev/null; wait "$DNS_PID" 2>/dev/null; fi
    bench_stop_all
}
trap auth_stop_all EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- messages and DNS
PYTHONPATH="$ROOT/src" "$PY" "$HERE/auth_mail.py" "$WORK/mail" "$FROM" "$TO" \
    || die "bench/auth_mail.py failed (MW_PYTHON needs dkimpy and cryptography)"
DNS_PORT=$(free_port)
dns_args=(--keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll
          --listen-address=127.0.0.1 --bind-interfaces "--port=$DNS_PORT" --pid-file=
          "--log-facility=$WORK/dnsmasq.log" --local-ttl=3600
          --local=/example.org/ --local=/forwarder.example.net/ --local=/127.in-addr.arpa/
          "--host-record=$HELO,127.0.0.1" "--ptr-record=1.0.0.127.in-addr.arpa,$HELO")
[ "$(id -u)" -eq 0 ] && dns_args+=(--user=nobody)
while IFS=$'\t' read -r -a record; do
    dns_args+=("--txt-record=$(IFS=,; echo "${record[*]}")")
done < "$WORK/mail/dns.txt"
"$DNSMASQ" "${dns_args[@]}" > "$WORK/dnsmasq.err" 2>&1 &
DNS_PID=$!
for _ in $(seq 1 100); do
    "$PY" -c "import dns.resolver as r, sys; x = r.Resolver(configure=False); x.nameservers = ['127.0.0.1']; x.port = $DNS_PORT; x.resolve('$DOMAIN', 'TXT', lifetime=0.2)" 2>/dev/null && break
    kill -0 "$DNS_PID" 2>/dev/null || die "dnsmasq did not start: $(cat "$WORK/dnsmasq.err")"
    nap 0.05
done

# ---------------------------------------------------------------- the two Mailwright configs
MW_PORT=$(free_port)
PF_PORT=$(free_port)
[ "$PF_PORT" = "$MW_PORT" ] && PF_PORT=$(free_port)
port_of() { if [ "$1" = pf ]; then echo "$PF_PORT"; else echo "$MW_PORT"; fi; }
BASE="
[delivery]
mode = \"queue\"

[relay]
networks = []
domains = [\"${TO#*@}\"]

[dns]
nameservers = [\"127.0.0.1\"]
port = $DNS_PORT
"
CHECKS="spf (MAIL FROM, HELO), dkim_verify, ARC"
AUTH="$BASE
[spf]
enabled = true
helo = true

[arc]
verify = true
"
if PYTHONPATH="$ROOT/src" "$PY" -c 'import sys; from mailwright.config.schema import Settings; sys.exit("dmarc" not in Settings.model_fields)'; then
    HAVE_DMARC=1 CHECKS="spf (MAIL FROM, HELO), dkim_verify, DMARC, ARC"
    AUTH="$AUTH
[dmarc]
enabled = true
"
else
    HAVE_DMARC=0
fi
AUTH="$AUTH
[[filters]]
plugin = \"dkim_verify\"
"
if [[ " $SERVERS " == *" pf "* ]]; then
    pf_start "$PF_PORT" || die "Postfix did not start"
fi
echo "# auth.sh mailwright=127.0.0.1:$MW_PORT postfix=127.0.0.1:$PF_PORT dnsmasq=127.0.0.1:$DNS_PORT checks=[$CHECKS] m=$M reps=$REPS cpus=$(nproc) python=$PY" >&2

send() {   # send SERVER SESSIONS COUNT MAIL: elapsed seconds, or "fail"
    local t0 t1
    t0=$EPOCHREALTIME
    if ! timeout "$TMO" smtp-source -s "$2" -m "$3" -F "$WORK/mail/$4.eml" -M "$HELO" \
        -f "$FROM" -t "$TO" "127.0.0.1:$(port_of "$1")" > /dev/null 2> "$WORK/source.err"; then
        echo fail; return
    fi
    t1=$EPOCHREALTIME
    calc %.4f "$t1 - $t0"
}

prepare() {   # prepare SERVER MAIL: a fresh, warm server
    case "$1" in
        mw) mw_config "$BASE"; mw_start || die "Mailwright did not start";;
        mwauth) mw_config "$AUTH"; mw_start || die "Mailwright (checks) did not start";;
    esac
    [ "$(send "$1" 10 100 "$2")" != fail ] || die "warm-up of $1 failed: $(tail -1 "$WORK/source.err")"
    sync
    sleep "$SETTLE"
}

finish() { if [ "$1" = pf ]; then accept_finish pf; else accept_finish mw; fi; }

queued() {   # queued SERVER: how many messages its queue holds
    if [ "$1" = pf ]; then
        postqueue -j | wc -l
    else
        mw_cli queue list --json | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)))'
    fi
}

# ---------------------------------------------------------------- checked at all?
if [[ " $SERVERS " == *" mwauth "* ]]; then
    for mail in $MAILS; do
        prepare mwauth "$mail"
        id=$(mw_cli queue list --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)[0]["queue_id"])')
        mw_cli queue show "$id" > "$WORK/headers" 2>&1
        finish mwauth
        want="spf=pass"
        case "$mail" in plain) want="$want dkim=none";; dkim) want="$want dkim=pass";; arc) want="$want dkim=pass arc=pass";; esac
        [ "$HAVE_DMARC" = 1 ] && want="$want dmarc=pass"
        for w in $want; do
            grep -q "$w" "$WORK/headers" || die "$mail: no $w in the Authentication-Results of mw+auth: $(grep -A4 Authentication-Results "$WORK/headers" | head -c 1500)"
        done
        echo "# mw+auth $mail: $want" >&2
    done
fi

# ---------------------------------------------------------------- runs
declare -A RATE CPU
for mail in $MAILS; do
    for n in $NLIST; do
        declare -A runs=() cpus=()
        for rep in $(seq 1 "$REPS"); do
            for srv in $SERVERS; do
                prepare "$srv" "$mail"
                c0=$(cpu_snap)
                secs=$(send "$srv" "$n" "$M" "$mail")
                c1=$(cpu_snap)
                got=$(queued "$srv")
                finish "$srv"
                if [ "$secs" = fail ] || [ "$got" -ne $(( M + 100 )) ]; then
                    echo "# run auth $srv mail=$mail n=$n rep=$rep FAILED: queued $got of $(( M + 100 )); $(tail -1 "$WORK/source.err")" >&2
                    continue
                fi
                r=$(calc %.1f "$M / $secs"); c=$(cpu_ms "$c0" "$c1" "$M")
                runs[$srv]="${runs[$srv]:-} $r"; cpus[$srv]="${cpus[$srv]:-} $c"
                echo "# run auth $srv mail=$mail n=$n rep=$rep secs=$secs msgs_per_s=$r cpu_ms_per_msg=$c" >&2
            done
        done
        for srv in $SERVERS; do
            RATE[$srv,$mail,$n]=$(echo "${runs[$srv]:-}" | median)
            CPU[$srv,$mail,$n]=$(echo "${cpus[$srv]:-}" | median)
            echo "# auth $srv mail=$mail n=$n msgs_per_s=${RATE[$srv,$mail,$n]} runs=$(echo ${runs[$srv]:-} | tr ' ' /) cpu=$(echo ${cpus[$srv]:-} | tr ' ' /)" >&2
        done
        unset runs cpus
    done
done

# ---------------------------------------------------------------- report
added() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="NA" || b=="NA") print "NA"; else printf "%+.2f", a-b }'; }
report() {
    echo "## Cost of the inbound authentication checks ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, smtp-source -F, one connection per message, m=$M, median of $REPS)"
    echo
    echo "mw+auth: $CHECKS. Postfix: accept only, no checks."
    echo
    echo "| message | sessions | server | msgs/s | CPU ms/msg | ratio to Postfix (msgs/s) | CPU ms/msg added by the checks |"
    echo "|---|---|---|---|---|---|---|"
    local mail n srv name extra
    for mail in $MAILS; do for n in $NLIST; do for srv in $SERVERS; do
        case "$srv" in mw) name="Mailwright";; mwauth) name="Mailwright + checks";; pf) name="Postfix";; esac
        extra=""
        [ "$srv" = mwauth ] && extra=$(added "${CPU[mwauth,$mail,$n]:-NA}" "${CPU[mw,$mail,$n]:-NA}")
        echo "| $mail | $n | $name | ${RATE[$srv,$mail,$n]:-NA} | ${CPU[$srv,$mail,$n]:-NA} | $(ratio "${RATE[$srv,$mail,$n]:-NA}" "${RATE[pf,$mail,$n]:-NA}") | $extra |"
    done; done; done
}
report
[ -z "$OUT" ] || report > "$OUT"
