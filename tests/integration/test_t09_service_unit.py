"""T09 the shipped systemd unit: systemd itself finds nothing wrong with it (every key
known, every value parsed), and it is the unit the service docs describe."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.peers import require_peer

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "mailwright.service"


def settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_the_unit_file_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    require_peer("systemd-analyze", analyze is not None, "package systemd")
    entry = Path(sys.executable).parent / "mailwright"
    require_peer(f"{entry}", entry.exists(), "the mailwright entry point (pip install -e .)")
    unit = tmp_path / "mailwright.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/mailwright", str(entry)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys and bad values only warn


def test_the_unit_is_a_notify_service_reloaded_by_sighup() -> None:
    unit = settings(UNIT.read_text())
    assert unit["Type"] == "notify"
    assert unit["ExecStart"].endswith("mailwright serve")
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["KillMode"] == "mixed"  # SIGTERM to the daemon; it stops the helper
    assert unit["RestartPreventExitStatus"] == "78"
    assert "User" not in unit  # started as root: it binds port 25, then drops to [service] user
    assert "CAP_NET_BIND_SERVICE" in unit["CapabilityBoundingSet"]
    assert "ProtectHome" not in unit  # local delivery reads ~/.forward, writes ~/Maildir
