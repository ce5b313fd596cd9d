"""A user database for tests: named users with homes and mailboxes under a temp dir.

Implements ``routing.localusers.LocalUsers`` like the passwd and virtual mailbox
backends do, so tests need not create system accounts. Users get the uid/gid the
test chooses (by default the test process's own).
"""

from __future__ import annotations

import os
from pathlib import Path

from mailwright.routing.localusers import LocalUser


class StaticUsers:
    def __init__(self, root: Path, names: list[str], uid: int | None = None) -> None:
        self.root = root
        self.users: dict[str, LocalUser] = {}
        for name in names:
            self.add(name, uid=uid)

    def add(
        self,
        name: str,
        *,
        uid: int | None = None,
        gid: int | None = None,
        shell: str = "/bin/sh",
        home: bool = True,
        maildir: bool = False,
    ) -> LocalUser:
        home_dir = self.root / "home" / name
        if home:
            home_dir.mkdir(parents=True, exist_ok=True)
        spool = self.root / "mail"
        spool.mkdir(exist_ok=True)
        user = LocalUser(
            name=name,
            uid=os.getuid() if uid is None else uid,
            gid=os.getgid() if gid is None else gid,
            home=str(home_dir),
            shell=shell,
            mailbox=spool / (name + ("/" if maildir else "")),
            maildir=maildir,
        )
        self.users[name] = user
        return user

    def lookup(self, name: str) -> LocalUser | None:
        return self.users.get(name.lower())
