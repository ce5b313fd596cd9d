"""One composition root: start-up and SIGHUP build the daemon's parts with the same
builder (``daemon.generation``), and a reload swaps the generation as a whole."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mailwright.config.loader import load_settings
from mailwright.config.schema import Settings
from mailwright.daemon.app import Daemon
from mailwright.daemon.generation import (
    Generation,
    GenerationError,
    build_generation,
    check_plugins,
)
from mailwright.daemon.runtime import Runtime
from tests.support.daemon import render_toml


def write_config(root: Path, **extra: Any) -> Path:
    (root / "aliases").write_text("postmaster: root\n")
    config: dict[str, Any] = {
        "hostname": "mx.test",
        "listeners": [],
        "queue": {"directory": str(root / "queue")},
        "routing": {"alias_file": str(root / "aliases")},
        "server": {"reverse_dns": False},
        **extra,
    }
    path = root / "mailwright.toml"
    path.write_text(render_toml(config) + "\n")
    return path


def shape(generation: Generation) -> dict[str, object]:
    """What a generation is made of, without object identities."""
    return {
        "settings": generation.settings,
        "security": (
            type(generation.security.tls),
            type(generation.security.authenticator),
            type(generation.security.throttle),
        ),
        "access": type(generation.access),
        "resolver": type(generation.resolver),
        "router": type(generation.router),
        "pipeline": [type(hook) for hook in generation.pipeline.hooks],
        "client_names": type(generation.client_names),
        "agents": {t: type(a) for t, a in generation.delivery.agents.items()},
        "scheduling": generation.delivery.settings,
        "expander": type(generation.delivery.expander),
    }


def test_start_up_and_reload_build_the_same_generation(tmp_path: Path) -> None:
    path = write_config(tmp_path, relay={"networks": ["192.0.2.0/24"]})
    settings = load_settings(path)
    daemon = Daemon(settings, Runtime(config_path=path))
    started = daemon.generation
    assert asyncio.run(daemon.reload_configuration())  # the same file, read again
    reloaded = daemon.generation
    assert reloaded is not started
    assert shape(reloaded) == shape(started)
    # the scheduler delivers with the new generation's parts: no attribute patched in
    assert daemon.scheduler.parts is reloaded.delivery
    assert daemon.settings is reloaded.settings


def test_reload_carries_over_the_live_tls_context_only(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    daemon = Daemon(settings)
    store, writer = daemon.store, daemon.writer
    first = build_generation(settings, store=store, writer=writer, deposit=None)
    second = build_generation(settings, store=store, writer=writer, deposit=None, previous=first)
    assert second.security.throttle is first.security.throttle  # [auth] unchanged
    assert second.pipeline is not first.pipeline
    assert second.delivery.agents is not first.delivery.agents
    with pytest.raises(AttributeError):
        second.router = first.router  # type: ignore[misc]  # a generation is immutable


def test_a_bad_reload_keeps_the_generation(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    daemon = Daemon(load_settings(path), Runtime(config_path=path))
    started = daemon.generation
    (tmp_path / "transport").write_text("example.org nonsense:[\n")
    write_config(tmp_path, routing={"transport_table": str(tmp_path / "transport")})
    assert not asyncio.run(daemon.reload_configuration())
    assert daemon.generation is started
    assert daemon.scheduler.parts is started.delivery


def test_plugin_options_are_checked_by_the_builder(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    daemon = Daemon(settings)
    bad = settings.model_copy(
        update={"dnsbl": settings.dnsbl.model_copy(update={"zones": ["bl.test=not-an-ip"]})}
    )
    with pytest.raises(GenerationError, match="dnsbl"):
        build_generation(bad, store=daemon.store, writer=daemon.writer, deposit=None)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"plugin": "no-such-plugin"}, "no filter plugin named 'no-such-plugin'"),
        ({"plugin": "stamp", "options": {"header": "bad name", "value": "v"}}, "options.header"),
    ],
)
def test_plugin_options_are_not_the_schemas_business(entry: dict[str, Any], problem: str) -> None:
    """The settings check the shape of a plugin entry only (config is below policy);
    the builder loads the plugin and checks its options."""
    settings = Settings.model_validate({"filters": [entry]})
    with pytest.raises(GenerationError, match=rf"filters\[1\] \(.*\): .*{problem}"):
        check_plugins(settings)


def test_restart_only_delivery_settings_are_kept(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    daemon = Daemon(load_settings(path), Runtime(config_path=path))
    write_config(tmp_path, delivery={"mode": "queue", "max_concurrency": 7})
    assert asyncio.run(daemon.reload_configuration())
    assert daemon.settings.delivery.max_concurrency == Settings().delivery.max_concurrency
    assert daemon.settings.delivery.mode == Settings().delivery.mode
