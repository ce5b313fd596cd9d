"""``mailwright dmarc update-psl``: a list is checked, installed atomically where the daemon
reads it, and used; a file that is not one is refused with 65. ``report --dry-run`` on an
empty store says so."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mailwright.cli.main import cli
from mailwright.config.loader import load_settings
from mailwright.core.sysexits import ExitCode
from mailwright.policy.dmarc import load_suffixes

LIST = "// test list\ncom\nuk\nco.uk\nexample.test\n"


def config(tmp_path: Path) -> Path:
    path = tmp_path / "mailwright.toml"
    path.write_text(f'hostname = "mx.test"\n[queue]\ndirectory = "{tmp_path / "queue"}"\n')
    return path


def run(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(path), "dmarc", *args])
    return result.exit_code, result.stdout + result.stderr


def test_update_psl_installs_a_list_the_daemon_then_uses(tmp_path: Path) -> None:
    path = config(tmp_path)
    settings = load_settings(path)
    assert load_suffixes(settings).org_domain("a.b.example.test") == "example.test"  # bundled
    source = tmp_path / "psl.dat"
    source.write_text(LIST)
    code, out = run(path, "update-psl", "--file", str(source))
    assert code == 0, out
    installed = tmp_path / "queue" / "public_suffix_list.dat"
    assert out.startswith(f"{installed}: 4 rules installed")
    assert installed.read_text() == LIST
    # example.test is a public suffix in this list: one more label is the org domain
    assert load_suffixes(settings).org_domain("a.b.example.test") == "b.example.test"


def test_update_psl_refuses_what_is_not_a_list(tmp_path: Path) -> None:
    path = config(tmp_path)
    page = tmp_path / "page.html"
    page.write_text("<html>404</html>\n")
    code, out = run(path, "update-psl", "--file", str(page))
    assert code == ExitCode.DATAERR and "not a Public Suffix List" in out
    assert not (tmp_path / "queue" / "public_suffix_list.dat").exists()


def test_report_dry_run_with_nothing_recorded(tmp_path: Path) -> None:
    code, out = run(config(tmp_path), "report", "--dry-run")
    assert (code, out) == (0, "no DMARC results with rua= recorded in this period\n")
