"""Run Dovecot LMTP (2.3) with Maildir users and quota as a real peer (test-peers.md, section 2).

Users: alice and bob (10 MB quota), ``full`` (1 KB quota, already over it:
RCPT is refused with 552 5.2.2), ``small`` (2 KB: a bigger message fails at
end of data, per recipient). Any other user does not exist (550 5.1.1).
Listens on a fresh loopback port and on the Unix socket ``run/lmtp``. Needs
root (the auth and lmtp processes switch users). Stop with ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.daemon import free_port
from tests.support.smtp_sink import wait_for_port

DOVECOT = "/usr/sbin/dovecot"
NOBODY = 65534


def available() -> bool:
    return shutil.which(DOVECOT) is not None and os.geteuid() == 0


class Dovecot:
    def __init__(self, quota_tempfail: bool = False) -> None:
        # a short path: Unix socket paths are limited to 108 octets
        self.root = Path(tempfile.mkdtemp(prefix="dv.", dir="/tmp"))
        self.port = free_port()
        self.quota_tempfail = quota_tempfail
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> str:
        return str(self.root / "run" / "lmtp")

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user / "Maildir"

    def delivered(self, user: str) -> list[bytes]:
        new = self.maildir(user) / "new"
        if not new.is_dir():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]

    def _configure(self) -> Path:
        t = self.root
        os.chmod(t, 0o755)
        for sub in ("run", "state", "mail"):
            (t / sub).mkdir()
        os.chown(t / "mail", NOBODY, NOBODY)
        users = [
            f"alice@example.test:{{PLAIN}}secret:{NOBODY}:{NOBODY}::{t}/mail/alice::",
            f"bob@example.test:{{PLAIN}}secret:{NOBODY}:{NOBODY}::{t}/mail/bob::",
            f"full@example.test:{{PLAIN}}secret:{NOBODY}:{NOBODY}::{t}/mail/full::"
            "userdb_quota_rule=*:storage=1K",
            f"small@example.test:{{PLAIN}}secret:{NOBODY}:{NOBODY}::{t}/mail/small::"
            "userdb_quota_rule=*:storage=2K",
        ]
        (t / "users").write_text("\n".join(users) + "\n")
        os.chmod(t / "users", 0o644)
        tempfail = "quota_full_tempfail = yes\n" if self.quota_tempfail else ""
        conf = f"""instance_name = dovecot-test-{self.port}
base_dir = {t}/run
state_dir = {t}/state
log_path = {t}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:~/Maildir
first_valid_uid = 1
mail_plugins = $mail_plugins quota
lmtp_rcpt_check_quota = yes
{tempfail}passdb {{
  driver = passwd-file
  args = {t}/users
}}
userdb {{
  driver = passwd-file
  args = {t}/users
}}
plugin {{
  quota = maildir:User quota
  quota_rule = *:storage=10M
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
"""
        path = t / "dovecot.conf"
        path.write_text(conf)
        full = self.maildir("full")
        for sub in ("cur", "new", "tmp"):
            (full / sub).mkdir(parents=True)
        filler = full / "cur" / "1000000000.filler.host:2,S"
        filler.write_text("Subject: filler\n\n" + "x" * 5000 + "\n")
        for p in (t / "mail" / "full", full, full / "cur", full / "new", full / "tmp", filler):
            os.chown(p, NOBODY, NOBODY)
        return path

    def start(self) -> Dovecot:
        conf = self._configure()
        subprocess.run(["doveconf", "-c", str(conf), "-n"], check=True, capture_output=True)
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "stderr").open("wb"),
        )
        wait_for_port(self.port, timeout=20)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
