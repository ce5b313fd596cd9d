"""A DNSSEC world for tests: zones signed here, served by NSD, validated by Unbound, on loopback.

    world = DnssecWorld(tmp_path)
    world.signed("dane.test").add("ee MX 10 mx.ee", "mx.ee A 127.0.0.1")
    world.signed("dane.test").add("_25._tcp.mx.ee TLSA 3 1 1 ab..")
    world.unsigned("plain.test").add("@ MX 10 mx", "mx A 127.0.0.1")
    world.tamper("dane.test", "_25._tcp.mx.bogus", "TLSA")  # bogus: its signature no longer fits
    with world:                       # keys, signing, nsd, unbound; waits until both answer
        resolver = DnsResolver([world.address], world.port, dnssec=True)

A signed zone gets one ECDSA P-256 key (``ldns-keygen -k``, flags 257, signing every RRset)
and is signed with ``ldns-signzone`` (NSEC); its DNSKEY is Unbound's trust anchor, so its
answers carry the AD bit. An unsigned zone has no anchor above it: Unbound answers it as
insecure (no AD). Unbound reaches the zones through stub zones pointing at NSD, and the root
through NSD as well (which refuses it): nothing leaves the host. Unbound's built-in local
zone for ``test.`` is switched off (``nodefault``). ``tamper`` changes one record's data after
signing, so that Unbound finds its RRSIG bogus and answers SERVFAIL.

Peers: ``nsd`` (NSD), ``unbound`` and ``ldnsutils`` (ldns-keygen, ldns-signzone) from Debian
(scripts/install-test-deps.sh). Processes run in the foreground as children of the test and
are stopped with SIGTERM, never by name.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.query

from tests.support.dns import _free_port

NSD = shutil.which("nsd") or "/usr/sbin/nsd"
UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
PROGRAMS = (NSD, UNBOUND, "ldns-keygen", "ldns-signzone")
ADDRESS = "127.0.0.1"
START_TIMEOUT = 15.0


def available() -> bool:
    return all(shutil.which(p) is not None for p in PROGRAMS)


WHY = "nsd, unbound and ldnsutils (ldns-signzone) are not installed"


class Zone:
    def __init__(self, name: str, signed: bool) -> None:
        self.name = name
        self.signed = signed
        self.records: list[str] = []
        self.tampered: list[tuple[str, str]] = []

    def add(self, *records: str) -> Self:
        """Zone-file lines, names relative to the zone (``@`` is its apex)."""
        self.records.extend(records)
        return self

    def text(self) -> str:
        head = [
            f"$ORIGIN {self.name}.",
            "$TTL 60",
            f"@ IN SOA ns.{self.name}. hostmaster.{self.name}. 1 3600 600 86400 60",
            f"@ IN NS ns.{self.name}.",
            f"ns IN A {ADDRESS}",
        ]
        return "\n".join([*head, *self.records]) + "\n"


class DnssecWorld:
    """NSD (authoritative) and Unbound (validating) with the zones given; a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.address = ADDRESS
        self.port = 0  # Unbound's: where Mailwright's resolver points
        self.nsd_port = 0
        self.zones: dict[str, Zone] = {}
        self._processes: list[subprocess.Popen[bytes]] = []

    def signed(self, name: str) -> Zone:
        return self.zones.setdefault(name, Zone(name, signed=True))

    def unsigned(self, name: str) -> Zone:
        return self.zones.setdefault(name, Zone(name, signed=False))

    def tamper(self, zone: str, owner: str, rdtype: str) -> Self:
        self.zones[zone].tampered.append((f"{owner}.{zone}.".lower(), rdtype.upper()))
        return self

    def settings(self) -> dict[str, object]:
        """The ``[dns]`` section pointing Mailwright at Unbound."""
        return {"nameservers": [self.address], "port": self.port}

    # ------------------------------------------------------------------ building

    def _run(self, *command: str) -> str:
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr or done.stdout}")
        return done.stdout

    def _zone_file(self, zone: Zone) -> tuple[str, str]:
        """(the file NSD serves, the trust anchor: the zone's DNSKEY; "" when unsigned)."""
        path = self.root / f"{zone.name}.zone"
        path.write_text(zone.text())
        if not zone.signed:
            return path.name, ""
        key = self._run("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", zone.name).strip()
        self._run("ldns-signzone", "-o", zone.name, "-f", f"{path.name}.signed", path.name, key)
        signed = self.root / f"{path.name}.signed"
        if zone.tampered:
            signed.write_text(_tampered(signed.read_text(), zone.tampered))
        return signed.name, (self.root / f"{key}.key").read_text().strip()

    def _nsd_conf(self, files: dict[str, str]) -> Path:
        zones = "".join(
            f"zone:\n  name: {name}\n  zonefile: {self.root / file}\n"
            for name, file in files.items()
        )
        conf = self.root / "nsd.conf"
        conf.write_text(
            "server:\n"
            f"  ip-address: {self.address}@{self.nsd_port}\n"
            "  do-ip6: no\n"
            '  username: ""\n'
            '  chroot: ""\n'
            f"  zonesdir: {self.root}\n"
            f"  pidfile: {self.root / 'nsd.pid'}\n"
            f"  logfile: {self.root / 'nsd.log'}\n"
            f"  xfrdfile: {self.root / 'xfrd.state'}\n"
            f"  zonelistfile: {self.root / 'zone.list'}\n"
            f"  xfrdir: {self.root}\n"
            '  database: ""\n'
            "  server-count: 1\n"
            "  verbosity: 1\n"
            "remote-control:\n  control-enable: no\n" + zones
        )
        return conf

    def _unbound_conf(self, anchors: list[str]) -> Path:
        anchor_file = self.root / "anchors.key"
        anchor_file.write_text("".join(a + "\n" for a in anchors))
        stubs = "".join(
            f'stub-zone:\n  name: "{name}."\n  stub-addr: {self.address}@{self.nsd_port}\n'
            for name in [*self.zones, ""]
        )
        conf = self.root / "unbound.conf"
        conf.write_text(
            "server:\n"
            f"  interface: {self.address}\n"
            f"  port: {self.port}\n"
            "  do-ip6: no\n"
            '  username: ""\n'
            '  chroot: ""\n'
            f'  directory: "{self.root}"\n'
            f'  pidfile: "{self.root / "unbound.pid"}"\n'
            f'  logfile: "{self.root / "unbound.log"}"\n'
            "  use-syslog: no\n"
            "  num-threads: 1\n"
            "  verbosity: 1\n"
            "  val-log-level: 2\n"
            "  do-not-query-localhost: no\n"
            "  access-control: 127.0.0.0/8 allow\n"
            '  module-config: "validator iterator"\n'
            + (f'  trust-anchor-file: "{anchor_file}"\n' if anchors else "")
            + '  local-zone: "test." nodefault\n'
            "  qname-minimisation: no\n"
            "remote-control:\n  control-enable: no\n" + stubs
        )
        return conf

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        files, anchors = {}, []
        for zone in self.zones.values():
            files[zone.name], anchor = self._zone_file(zone)
            if anchor:
                anchors.append(anchor)
        try:
            self.nsd_port = _free_port()
            nsd = self._nsd_conf(files)
            probe = f"ns.{next(iter(files), 'none.invalid')}"
            self._spawn("nsd", [NSD, "-d", "-c", str(nsd)], self.nsd_port, probe)
            self.port = _free_port()
            unbound = self._unbound_conf(anchors)
            self._spawn("unbound", [UNBOUND, "-d", "-c", str(unbound)], self.port, "ready.invalid")
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, command: list[str], port: int, probe_name: str) -> None:
        output = (self.root / f"{name}.stderr").open("wb")
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        finally:
            output.close()
        self._processes.append(process)
        deadline = time.monotonic() + START_TIMEOUT
        probe = dns.message.make_query(probe_name, "A")
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {self.stderr(name)}")
            try:
                dns.query.udp(probe, self.address, port=port, timeout=0.1)
                return
            except (dns.exception.Timeout, OSError):
                continue  # not listening yet: ask again
        raise RuntimeError(f"{name} did not answer within {START_TIMEOUT} s: {self.stderr(name)}")

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def stderr(self, name: str) -> str:
        path = self.root / f"{name}.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        """Ask Unbound directly (DO and AD set), for the tests' own checks."""
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        query.flags |= dns.flags.AD
        return dns.query.udp(query, self.address, port=self.port, timeout=5)

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


def _tampered(text: str, targets: list[tuple[str, str]]) -> str:
    """The signed zone with the data of the named records changed (last hex digit flipped)."""
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and (fields[0].lower(), fields[3].upper()) in targets:
            last = fields[-1]
            fields[-1] = last[:-1] + ("0" if last[-1] != "0" else "1")
            lines.append("\t".join(fields))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
