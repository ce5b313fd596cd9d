"""``sendmail -bv`` (``cli.verify``): the real alias table and the real resolver, what it
prints, and how each failure becomes a sendmail exit code (67 unknown user or invalid
address, 78 bad configuration).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.cli import verify
from mailwright.cli.aliases import newaliases
from mailwright.config.lite import SubmitConfig

CONFIG = SubmitConfig(
    path=None,
    hostname="mx.test",
    queue_dir="/q",
    socket_path="/q/s",
    maildrop_dir="/q/m",
    domain="mx.test",
    local_domains=("mx.test", "localhost"),
)


def write_config(tmp_path: Path, routing: str = 'alias_file = "aliases"\n') -> Path:
    path = tmp_path / "mailwright.toml"
    path.write_text(
        'hostname = "mx.test"\n'
        '[queue]\ndirectory = "q"\n'
        f"[routing]\n{routing}"
        '[local_delivery]\nmail_spool = "mail"\n'
    )
    return path


def test_bv_asks_the_resolver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "aliases").write_text("staff: root\n")
    config = write_config(tmp_path)
    assert newaliases(str(config)) == 0
    capsys.readouterr()
    assert verify.verify(["staff", "nobody-here", "x@@y"], CONFIG, str(config)) == 67
    mbox = tmp_path / "mail" / "root"
    assert capsys.readouterr().out.splitlines() == [
        f"root@mx.test... deliverable: mailer local, user root (mbox {mbox})",
        "nobody-here@mx.test... User unknown",
        "x@@y... invalid address: invalid local part",
    ]


def test_a_bad_configuration_is_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mailwright.toml"
    config.write_text("hostname = 3\n")
    with pytest.raises(SystemExit) as exited:
        verify.verify(["root"], CONFIG, str(config))
    assert exited.value.code == 78
    assert str(config) in capsys.readouterr().err
