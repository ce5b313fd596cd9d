"""A private Postfix instance as a real next hop for tests (not the system's Postfix).

It gets its own configuration directory, queue and mailboxes under a temp dir and
listens on a free loopback port; nothing in /etc/postfix is touched. Mail for
``pf.test`` is delivered by Postfix's virtual(8) into ``mail/<user>`` mbox files for
the users given; every other recipient at ``pf.test`` is refused at RCPT with
Postfix's own ``550 5.1.1 ... User unknown in virtual mailbox table``. Needs root
(the master runs as root and its daemons as ``postfix``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.support.daemon import free_port, wait_until
from tests.support.smtp_sink import wait_for_port

MASTER = "/usr/lib/postfix/sbin/master"
PRIVATE_DIRS = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                "incoming", "private", "saved", "trace")  # fmt: skip


def available() -> bool:
    return os.path.exists(MASTER) and os.geteuid() == 0 and os.path.exists("/etc/postfix")


class Postfix:
    def __init__(self, users: list[str], domain: str = "pf.test") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pf.", dir="/tmp"))
        self.port = free_port()
        self.domain = domain
        self.users = users
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    def _configure(self) -> None:
        self.root.chmod(0o755)  # mkdtemp's 0700 would shut out the postfix user
        for d in ("conf", "queue", "data", "mail"):
            (self.root / d).mkdir()
        shutil.chown(self.root / "data", "postfix")
        shutil.chown(self.root / "mail", "nobody", "nogroup")
        queue = self.root / "queue"
        for d in PRIVATE_DIRS:
            (queue / d).mkdir(mode=0o700)
            shutil.chown(queue / d, "postfix", "root")
        for d, mode in (("maildrop", 0o730), ("public", 0o710)):
            (queue / d).mkdir()
            (queue / d).chmod(mode)
            shutil.chown(queue / d, "postfix", "postdrop")
        (queue / "pid").mkdir(mode=0o755)
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        master = ["#" + line if line.startswith("smtp ") and " inet " in line else line
                  for line in master]  # fmt: skip
        master.append(f"127.0.0.1:{self.port} inet n - n - - smtpd")
        (self.conf / "master.cf").write_text("\n".join(master) + "\n")
        shutil.copy("/etc/postfix/dynamicmaps.cf", self.conf)  # where the map types live
        (self.conf / "dynamicmaps.cf.d").mkdir()
        maps = " ".join(f"{{{u}@{self.domain}={u}}}" for u in self.users)
        (self.conf / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {self.root / "data"}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.root / "mail"}
virtual_mailbox_maps = inline:{{ {maps} }}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
maillog_file = {self.root / "maillog"}
maillog_file_prefixes = {self.root}
alias_maps =
alias_database =
""")

    def start(self) -> Postfix:
        self._configure()
        # its own session: the master signals its whole process group when it stops
        self.proc = subprocess.Popen([MASTER, "-c", str(self.conf), "-d"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)  # fmt: skip
        wait_for_port(self.port)
        return self

    def mailbox(self, user: str) -> bytes:
        path = self.root / "mail" / user
        return path.read_bytes() if path.exists() else b""

    def wait_delivered(self, user: str, count: int = 1, timeout: float = 20) -> bytes:
        wait_until(
            lambda: (
                self.mailbox(user).count(b"\nFrom ") + self.mailbox(user).startswith(b"From ")
                >= count
            ),
            timeout,
            f"{count} message(s) in {user}'s mailbox",
        )
        return self.mailbox(user)

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)
