#!/usr/bin/env bash
# Installs the Debian packages the test suite drives (real peers: Postfix's
# smtp-sink/smtp-source, swaks, Dovecot LMTP, dnsmasq, OpenDKIM, mutt, NSD and Unbound, ...)
# when any is missing. Starts no daemon: policy-rc.d blocks maintainer scripts.
# Without root (or password-less sudo) it cannot install: it says what is missing and
# exits 0 on a workstation (the tests that need them are skipped, with the reason), but
# exits 1 under CI=true, where a missing peer must fail the run (tests/support/peers.py).
set -euo pipefail

PACKAGES=(postfix swaks libnet-ssleay-perl dnsmasq-base dnsutils dovecot-core dovecot-lmtpd
          mutt mailutils openssl opendkim opendkim-tools libmilter-dev miltertest
          spamd spamc iproute2 sqlite3 procps postgresql groff-base
          gcc libc6-dev  # pip builds pymilter's C extension against libmilter-dev
          chromium chromium-driver  # the status page tests drive headless Chromium
          nsd unbound ldnsutils  # DANE: a signed zone (ldns-signzone), NSD serves it, Unbound validates
          systemd)  # systemd-analyze verifies the unit file

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "install-test-deps: missing ${missing[*]}; run as root to install them" >&2
        case "${CI:-}" in
            [Tt][Rr][Uu][Ee]|1|[Yy][Ee][Ss])
                echo "install-test-deps: CI=true: the tests need every peer; failing" >&2
                exit 1 ;;
        esac
        echo "install-test-deps: the tests that need them will be skipped" >&2
        exit 0
    fi
fi
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
fi
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
echo "install-test-deps: installing ${missing[*]}" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
