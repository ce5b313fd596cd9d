"""A pymilter (libmilter) test filter: records what the MTA sent, acts as the message asks.

Run as ``python testmilter.py SOCKET LOG [--name N] [--leadspc] [--noreply] [--symlist]
[--rcpt-rej]`` (``--rcpt-rej``: ask for the recipients the MTA refused, SMFIP_RCPT_REJ).
Every callback is written to LOG as one JSON line with its arguments and the
macros visible at that point. Actions come from the header ``X-Do-<name>:``
(comma-separated words, see ``eom``) and from envelope addresses
(``reject-me@`` at RCPT, ``tempfail@`` at MAIL, ``accept-rcpt@``, ``discard-me@``);
an unknown SMTP command ``XREJECT`` is refused with the filter's own text,
``XTEMPFAIL`` tempfailed.
"""

from __future__ import annotations

import json
import sys
import time

import Milter

MACROS = [
    "j", "_", "{daemon_name}", "{daemon_addr}", "{if_addr}", "{client_addr}", "{client_name}",
    "{client_port}", "v", "i", "{auth_type}", "{auth_authen}", "{mail_addr}", "{mail_mailer}",
    "{mail_host}",
    "{rcpt_addr}", "{rcpt_mailer}", "{rcpt_host}", "{msg_id}", "{tls_version}",
]  # fmt: skip

NAME = "t"
LOG = None


def record(cb: str, milter: Milter.Base | None, *args: object) -> None:
    macros = {}
    if milter is not None:
        for name in MACROS:
            value = milter.getsymval(name)
            if value is not None:
                macros[name] = value
    entry = {"cb": cb, "args": [a if isinstance(a, (str, int)) else repr(a) for a in args]}
    entry["macros"] = macros
    LOG.write(json.dumps(entry) + "\n")
    LOG.flush()


class TestMilter(Milter.Base):
    def __init__(self) -> None:
        self.actions: list[str] = []
        self.chunks: list[int] = []

    def connect(self, hostname, family, hostaddr):
        record("connect", self, hostname, family, repr(hostaddr))
        return Milter.CONTINUE

    def hello(self, name):
        record("helo", self, name)
        if name == "reject.helo":
            self.setreply("550", "5.7.1", "go away %% now")
            return Milter.REJECT
        return Milter.CONTINUE

    def envfrom(self, sender, *args):
        record("mail", self, sender, *args)
        self.actions, self.chunks = [], []
        if sender.startswith("<tempfail@"):
            return Milter.TEMPFAIL
        if sender.startswith("<discard-me@"):
            return Milter.DISCARD
        return Milter.CONTINUE

    def envrcpt(self, rcpt, *args):
        record("rcpt", self, rcpt, *args)
        if rcpt.startswith("<reject-me@"):
            self.setreply("550", "5.1.1", "no such user here")
            return Milter.REJECT
        if rcpt.startswith("<accept-rcpt@"):
            return Milter.ACCEPT
        return Milter.CONTINUE

    def data(self):
        record("data", self)
        return Milter.CONTINUE

    def header(self, name, value):
        record("header", None, name, value)
        if name.lower() == f"x-do-{NAME}":
            self.actions = [a.strip() for a in value.split(",") if a.strip()]
        if "reject-at-header" in self.actions and name.lower() == "subject":
            return Milter.REJECT
        return Milter.CONTINUE

    def eoh(self):
        record("eoh", self)
        return Milter.CONTINUE

    def body(self, chunk):
        self.chunks.append(len(chunk))
        record("body", None, len(chunk))
        if "skip" in self.actions:
            return Milter.SKIP
        return Milter.CONTINUE

    def eom(self):
        record("eom", self, *self.actions)
        do = set(self.actions)
        if "progress" in do:
            for _ in range(3):
                time.sleep(0.4)
                self.progress()
        if "add-header" in do:
            self.addheader("X-Added", "added by " + NAME)
        if "insert-header" in do:
            self.addheader("X-Inserted", "at the top", 0)
        if "change-header" in do:
            self.chgheader("Subject", 1, "changed subject")
        if "change-second" in do:
            self.chgheader("X-Twice", 2, "second changed")
        if "delete-header" in do:
            self.chgheader("X-Delete-Me", 1, "")
        if "folded-header" in do:
            self.addheader("X-Folded", "first line\n\tsecond line")
        if "add-rcpt" in do:
            self.addrcpt("<added@y.test>")
        if "add-rcpt-par" in do:
            self.addrcpt("<added-par@y.test>", "NOTIFY=NEVER")
        if "del-rcpt" in do:
            self.delrcpt("<b@y.test>")
        if "chgfrom" in do:
            self.chgfrom("<changed@x.test>", "BODY=8BITMIME")
        if "replbody" in do:
            self.replacebody(b"replaced body\r\nsecond line\r\n")
        if "replbody-big" in do:
            self.replacebody(b"0123456789abcdef" * 13050)  # 208,800 bytes: several packets
        if "quarantine" in do:
            self.quarantine("held for review")
        if "reject" in do:
            self.setreply("550", "5.7.1", "rejected by test filter")
            return Milter.REJECT
        if "multiline" in do:
            self.setreply("550", "5.7.1", "first line", "second line", "last line")
            return Milter.REJECT
        if "tempfail" in do:
            return Milter.TEMPFAIL
        if "discard" in do:
            return Milter.DISCARD
        if "accept" in do:
            return Milter.ACCEPT
        return Milter.CONTINUE

    def unknown(self, cmd):
        record("unknown", self, cmd)
        if cmd.upper().startswith("XREJECT"):
            self.setreply("550", "5.7.1", "refused by " + NAME)
            return Milter.REJECT
        if cmd.upper().startswith("XTEMPFAIL"):
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def abort(self):
        record("abort", None)
        return Milter.CONTINUE

    def close(self):
        record("close", None)
        return Milter.CONTINUE


def main() -> None:
    global NAME, LOG
    socket, log_path, *opts = sys.argv[1:]
    if "--name" in opts:
        NAME = opts[opts.index("--name") + 1]
    LOG = open(log_path, "a")  # noqa: SIM115
    cls: type[Milter.Base] = TestMilter
    if "--leadspc" in opts:
        cls = Milter.header_leading_space(cls)
    if "--noreply" in opts:
        for method in ("header", "body"):  # NR_HDR, NR_BODY: the MTA must not wait
            setattr(cls, method, Milter.noreply(getattr(cls, method)))
    if "--symlist" in opts:
        cls.envrcpt = Milter.symlist("{rcpt_addr}", "i")(cls.envrcpt)
        Milter.set_flags(Milter.CURR_ACTS | Milter.SETSYMLIST)
    else:
        Milter.set_flags(Milter.CURR_ACTS)
    if "--rcpt-rej" in opts:
        cls = Milter.enable_protocols(cls, Milter.P_RCPT_REJ)
    Milter.factory = cls
    LOG.write(json.dumps({"cb": "start"}) + "\n")
    LOG.flush()
    Milter.runmilter(NAME, socket, 60)


if __name__ == "__main__":
    main()
