"""The seam from ``newaliases``/``-bi`` and ``-bv`` to mailwright.routing.aliases.

The real aliases module and the real resolver: what the seam prints, and how each failure
becomes a sendmail exit code (65 no alias file configured, 72 unreadable file, 78 bad
configuration, 67 unknown user). The fallback for an install without the module is run
by pointing the seam at a module name that does not exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.cli import routing_seam
from mailwright.config.lite import SubmitConfig
from mailwright.config.loader import load_settings
from mailwright.routing.aliases import AliasTable

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


def test_without_the_module(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routing_seam, "ALIASES_MODULE", "mailwright.routing.not_there")
    assert routing_seam.aliases_module() is None
    assert routing_seam.rebuild_aliases(None) == 69
    assert capsys.readouterr().err == "mailwright: aliases are not supported yet\n"
    assert routing_seam.verify(["root", "a@example.org", "x@@y"], CONFIG, None) == 67
    assert capsys.readouterr().out.splitlines() == [
        "root@mx.test... deliverable: mailer local, user root",
        "a@example.org... deliverable: mailer esmtp, host example.org, user a@example.org",
        "x@@y... invalid address: invalid local part",
    ]


def test_the_real_module_is_found() -> None:
    module = routing_seam.aliases_module()
    assert module is not None and module.__name__ == "mailwright.routing.aliases"


def test_newaliases_builds_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "aliases").write_text("postmaster: root\nstaff: root, alice@remote.test\n")
    config = write_config(tmp_path)
    assert routing_seam.rebuild_aliases(str(config)) == 0
    source = tmp_path / "aliases"
    assert capsys.readouterr().out == f"{source}: 2 aliases, longest 23 bytes, 42 bytes total\n"
    table = AliasTable(load_settings(config).alias_database)
    try:
        assert table.lookup("staff") is not None and table.lookup("nobody-here") is None
    finally:
        table.close()


def test_newaliases_without_an_alias_file_is_65(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, routing='alias_file = ""\n')
    assert routing_seam.rebuild_aliases(str(config)) == 65
    assert capsys.readouterr().err == (
        "mailwright: no alias file configured (routing.alias_file)\n"
    )


def test_newaliases_with_an_unreadable_alias_file_is_72(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)  # names tmp_path/aliases, which does not exist
    assert routing_seam.rebuild_aliases(str(config)) == 72
    err = capsys.readouterr().err
    assert err.startswith("mailwright: ") and str(tmp_path / "aliases") in err


def test_a_bad_configuration_is_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mailwright.toml"
    config.write_text("hostname = 3\n")
    with pytest.raises(SystemExit) as exited:
        routing_seam.rebuild_aliases(str(config))
    assert exited.value.code == 78
    assert str(config) in capsys.readouterr().err


def test_bv_asks_the_resolver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "aliases").write_text("staff: root\n")
    config = write_config(tmp_path)
    assert routing_seam.rebuild_aliases(str(config)) == 0
    capsys.readouterr()
    assert routing_seam.verify(["staff", "nobody-here", "x@@y"], CONFIG, str(config)) == 67
    mbox = tmp_path / "mail" / "root"
    assert capsys.readouterr().out.splitlines() == [
        f"root@mx.test... deliverable: mailer local, user root (mbox {mbox})",
        "nobody-here@mx.test... User unknown",
        "x@@y... invalid address: invalid local part",
    ]
