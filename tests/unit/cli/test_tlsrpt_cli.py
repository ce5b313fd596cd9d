"""``mailwright tlsrpt report``: a --day that is not a date is a usage error (64), said
before any daemon is asked."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mailwright.cli.main import cli
from mailwright.core.sysexits import ExitCode


def test_a_day_that_is_not_a_date_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "mailwright.toml"
    path.write_text(f'hostname = "mx.test"\n[queue]\ndirectory = "{tmp_path / "queue"}"\n')
    for day in ("2026-13-45", "yesterday", "2026-1-1x"):
        result = CliRunner().invoke(
            cli, ["--config", str(path), "tlsrpt", "report", "--dry-run", "--day", day]
        )
        assert result.exit_code == ExitCode.USAGE, result.output
        assert f"--day must be YYYY-MM-DD or 'today', not {day!r}" in result.stderr
