"""[cluster] settings: the node's name (default: the host name) and its heartbeat; both
kept on reload (the heartbeat is started once, under that name)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mailwright.config.loader import ConfigError, load_settings
from mailwright.config.reloadable import effective_settings
from mailwright.config.schema import Settings


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "mailwright.toml"
    path.write_text(text)
    return load_settings(path)


def test_defaults_are_the_host_name_and_ten_seconds(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings.cluster.node == socket.gethostname()
    assert settings.cluster.heartbeat == 10.0


def test_a_named_node_and_a_duration(tmp_path: Path) -> None:
    settings = load(tmp_path, '[cluster]\nnode = " mx-2 "\nheartbeat = "1m"\n')
    assert (settings.cluster.node, settings.cluster.heartbeat) == ("mx-2", 60.0)


@pytest.mark.parametrize("text", ['node = ""', "heartbeat = 0", 'colour = "red"'])
def test_bad_cluster_settings_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="cluster"):
        load(tmp_path, f"[cluster]\n{text}\n")


def test_cluster_settings_need_a_restart(tmp_path: Path) -> None:
    old = load(tmp_path, '[cluster]\nnode = "a"\n')
    new = load(tmp_path, '[cluster]\nnode = "b"\nheartbeat = 2\n')
    effective, kept = effective_settings(old, new)
    assert kept == ["cluster"] and effective.cluster == old.cluster
