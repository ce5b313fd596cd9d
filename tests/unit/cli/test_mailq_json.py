"""``mailwright queue list --json`` shows each message's MAIL parameters, REQUIRETLS (RFC
8689) with them: true for a message queued with it, false for one queued without (click,
in process, a real SQLite queue in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mailwright.cli.main import cli
from mailwright.core.envelope import MailParams
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage
from tests.unit.queue.conftest import build_message


def test_list_json_shows_requiretls(tmp_path: Path) -> None:
    config = tmp_path / "mailwright.toml"
    config.write_text('hostname = "mx.test"\n[queue]\ndirectory = "q"\n')
    (tmp_path / "q").mkdir()
    store = SqliteQueueStore(tmp_path / "q" / "queue.db")
    store.open()
    try:
        tls = build_message("TLS", params=MailParams(smtputf8=True, requiretls=True))
        plain = build_message("PLAIN", received_at=1_700_000_001.0)
        assert store.apply_batch([InsertMessage(tls), InsertMessage(plain)]) == [None, None]
    finally:
        store.close()
    result = CliRunner().invoke(cli, ["--config", str(config), "queue", "list", "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    shown = {m["queue_id"]: (m["smtputf8"], m["requiretls"]) for m in json.loads(result.stdout)}
    assert shown == {"TLS": (True, True), "PLAIN": (False, False)}
