"""A real DNS server for tests: dnsmasq on a free loopback port, serving the records a test gives.

    dns = DnsServer(tmp_path)
    dns.zone("example.test")                      # unknown names under it: NXDOMAIN, not REFUSED
    dns.mx("example.test", "mx1.example.test", 10).host("mx1.example.test", "127.0.0.1", "::1")
    dns.null_mx("nullmx.test").cname("alias.test", "example.test")
    dns.servfail("servfail.test").timeout("timeout.test")
    with dns:                                     # starts dnsmasq, waits until it answers
        resolver = DnsResolver(["127.0.0.1"], dns.port, timeout=2, lifetime=3)
        ...                                       # or config {"dns": dns.settings()}

Every name given to ``mx``/``null_mx``/``host``/``cname``/``txt`` is also made a local
zone (dnsmasq ``--local``), so missing types answer NODATA and missing names NXDOMAIN.
``servfail`` forwards a domain to an in-process responder that answers every query
with SERVFAIL; ``timeout`` forwards it to a UDP socket that never answers. Names
dnsmasq does not know are REFUSED. Queries are logged to ``log_path``.

dnsmasq's pitfalls, which the options below avoid: without ``--local-ttl`` every TTL is 0;
without ``--local=/zone/`` unknown names and types (an MTA's AAAA lookups) are REFUSED
rather than NXDOMAIN or NODATA; ``--address`` answers only A/AAAA; forwarding to a closed
port gives a timeout, never SERVFAIL (hence the responder); the log file is opened before
the drop to ``nobody``, so a 0700 directory works. dnspython sees SERVFAIL and REFUSED
as ``NoNameservers``, a silent server as ``LifetimeTimeout``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import dns.exception
import dns.message
import dns.query

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
ADDRESS = "127.0.0.1"
START_TIMEOUT = 10.0
PORT_IN_USE = 2  # dnsmasq's exit status for "Address already in use"


def dnsmasq_available() -> bool:
    return os.access(DNSMASQ, os.X_OK)


def _free_port() -> int:
    """A port free on loopback for both UDP and TCP (dnsmasq binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((ADDRESS, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((ADDRESS, port))
                except OSError:
                    continue
                return port


class ServfailResponder:
    """A UDP 'name server' answering every query with SERVFAIL (RCODE 2), on a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ADDRESS, 0))
        self.port = int(self.sock.getsockname()[1])
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="servfail", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            query, peer = self.sock.recvfrom(4096)
            if self._stopping:
                return
            if len(query) < 12:
                continue
            # QR, RD copied, RA, RCODE=2; question copied; no records
            flags = 0x8000 | (int.from_bytes(query[2:4], "big") & 0x0100) | 0x0080 | 2
            reply = query[:2] + flags.to_bytes(2, "big") + query[4:6] + b"\0" * 6 + query[12:]
            self.sock.sendto(reply, peer)

    def stop(self) -> None:
        self._stopping = True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as poke:
            poke.sendto(b"stop", (ADDRESS, self.port))  # wakes the blocked recvfrom
        self._thread.join(timeout=5)
        self.sock.close()


class DnsServer:
    """dnsmasq as an authoritative server for test zones; a context manager."""

    def __init__(self, root: Path, ttl: int = 60) -> None:
        self.root = Path(root)
        self.ttl = ttl
        self.address = ADDRESS
        self.port = 0
        self.log_path = self.root / "dnsmasq.log"
        self._options: list[str] = []
        self._zones: list[str] = []
        self._servfail_domains: list[str] = []
        self._timeout_domains: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._servfail: ServfailResponder | None = None
        self._silent: socket.socket | None = None

    # ------------------------------------------------------------ records

    def zone(self, *domains: str) -> Self:
        for domain in domains:
            if domain not in self._zones:
                self._zones.append(domain)
        return self

    def mx(self, domain: str, host: str, preference: int = 10) -> Self:
        return self.option(f"--mx-host={domain},{host},{preference}").zone(domain)

    def null_mx(self, domain: str) -> Self:
        return self.option(f"--mx-host={domain},.,0").zone(domain)

    def host(self, name: str, *addresses: str) -> Self:
        """A and/or AAAA records (IPv4 and IPv6 addresses may be mixed)."""
        return self.option(f"--host-record={name},{','.join(addresses)}").zone(name)

    def cname(self, alias: str, target: str) -> Self:
        """The target must be a name this server knows (dnsmasq's limitation)."""
        return self.option(f"--cname={alias},{target}").zone(alias)

    def txt(self, name: str, text: str) -> Self:
        """A name that exists with neither MX nor address (MX/A/AAAA answer NODATA)."""
        return self.option(f"--txt-record={name},{text}").zone(name)

    def servfail(self, domain: str) -> Self:
        self._servfail_domains.append(domain)
        return self

    def timeout(self, domain: str) -> Self:
        self._timeout_domains.append(domain)
        return self

    def option(self, raw: str) -> Self:
        """Any other dnsmasq option, as written on its command line."""
        self._options.append(raw)
        return self

    # ---------------------------------------------------------- lifecycle

    def settings(self) -> dict[str, Any]:
        """The ``[dns]`` config section that points Mailwright at this server."""
        return {"nameservers": [self.address], "port": self.port}

    def _command(self) -> list[str]:
        command = [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            f"--listen-address={self.address}",
            "--bind-interfaces",
            f"--port={self.port}",
            "--pid-file=",
            "--log-queries",
            f"--log-facility={self.log_path}",
            f"--local-ttl={self.ttl}",
        ]
        if os.geteuid() == 0:
            command.append("--user=nobody")
        command += [f"--local=/{zone}/" for zone in self._zones]
        command += self._options
        if self._servfail is not None:
            target = f"{ADDRESS}#{self._servfail.port}"
            command += [f"--server=/{d}/{target}" for d in self._servfail_domains]
        if self._silent is not None:
            target = f"{ADDRESS}#{self._silent.getsockname()[1]}"
            command += [f"--server=/{d}/{target}" for d in self._timeout_domains]
        return command

    def start(self) -> None:
        if self._process is not None:  # a second dnsmasq would outlive the test unseen
            raise RuntimeError("DnsServer is already running: add records before start")
        self.root.mkdir(parents=True, exist_ok=True)
        if self._servfail_domains and self._servfail is None:
            self._servfail = ServfailResponder()
        if self._timeout_domains and self._silent is None:
            self._silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._silent.bind((ADDRESS, 0))  # never read: queries go unanswered
        try:
            for _ in range(5):
                self.port = _free_port()
                if self._launch():
                    return
            raise RuntimeError("dnsmasq: no free port after 5 tries")
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> bool:
        """Start dnsmasq and wait until it answers; False if the port was taken meanwhile."""
        stderr = (self.root / "dnsmasq.stderr").open("wb")
        try:
            self._process = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        finally:
            stderr.close()
        deadline = time.monotonic() + START_TIMEOUT
        probe = dns.message.make_query("ready.invalid.", "A")
        while time.monotonic() < deadline:
            status = self._process.poll()
            if status == PORT_IN_USE:
                return False
            if status is not None:
                raise RuntimeError(f"dnsmasq exited with {status}: {self.stderr()}")
            try:
                dns.query.udp(probe, self.address, port=self.port, timeout=0.05)
                return True
            except (dns.exception.Timeout, OSError):
                continue  # not listening yet: ask again
        raise RuntimeError(f"dnsmasq did not answer within {START_TIMEOUT} s: {self.stderr()}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._servfail is not None:
            self._servfail.stop()
            self._servfail = None
        if self._silent is not None:
            self._silent.close()
            self._silent = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stderr(self) -> str:
        path = self.root / "dnsmasq.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
