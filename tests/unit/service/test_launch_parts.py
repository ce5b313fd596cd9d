"""The launcher's parts: pid file, bound sockets, the service account, what SIGHUP keeps."""

from __future__ import annotations

import os
import pwd
import socket
import stat
from pathlib import Path

import pytest

from mailwright.config.loader import ConfigError
from mailwright.config.reloadable import effective_settings
from mailwright.config.schema import ServiceSection, Settings
from mailwright.daemon.bindings import BindError, bind_all
from mailwright.daemon.pidfile import AlreadyRunningError, PidFile
from mailwright.daemon.privileges import service_account
from mailwright.daemon.reload import refresh_aliases
from mailwright.routing.aliases import AliasTable
from mailwright.routing.items import Item, ItemKind
from tests.support.daemon import free_port
from tests.support.peers import is_root, peer

root_only = peer("root", is_root(), "binds privileged ports, becomes a service account")


def test_pid_file_is_locked_while_the_daemon_lives(tmp_path: Path) -> None:
    path = tmp_path / "run" / "mailwright.pid"
    first = PidFile(path)
    first.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    with pytest.raises(AlreadyRunningError, match=f"already running \\(pid {os.getpid()}\\)"):
        PidFile(path).acquire()
    first.release()
    assert not path.exists()
    path.write_text("12345\n")  # left by a daemon that died: not locked, reused
    again = PidFile(path)
    again.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    again.release()


def test_listeners_and_the_local_socket_are_bound_up_front(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "submit.sock").touch()  # not a socket: refused, not removed
    settings = Settings.model_validate(
        {
            "listeners": [{"address": "127.0.0.1", "port": port}, {"address": "::1", "port": port}],
            "queue": {"directory": str(tmp_path / "q")},
        }
    )
    with pytest.raises(BindError, match="exists and is not a socket"):
        bind_all(settings)
    with socket.create_server(("127.0.0.1", port)):
        pass  # the failed attempt released the ports it had bound
    (tmp_path / "q" / "submit.sock").unlink()
    bindings = bind_all(settings)
    try:
        assert set(bindings.listeners) == {("127.0.0.1", port), ("::1", port)}
        mode = stat.S_IMODE(os.stat(tmp_path / "q" / "submit.sock").st_mode)
        assert mode == 0o666
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening already
        with pytest.raises(BindError, match=f"127.0.0.1:{port}: Address already in use"):
            bind_all(settings)
    finally:
        bindings.close()


def test_no_account_to_become_unless_root_and_not_told_to_stay_root() -> None:
    assert service_account(ServiceSection(user="root")) is None
    if os.geteuid() != 0:
        assert service_account(ServiceSection(user="nobody")) is None
        assert service_account(ServiceSection()) is None  # the default account, ignored


@root_only
def test_the_service_account_must_exist_and_not_be_root() -> None:
    account = service_account(ServiceSection(user="nobody"))
    assert account is not None and account.uid == 65534 and 0 not in account.groups
    with pytest.raises(ConfigError, match="useradd --system"):
        service_account(ServiceSection(user="no-such-mailwright-user"))
    assert ServiceSection().user == "mailwright"  # safe by default: never root unless told
    try:
        pwd.getpwnam("mailwright")
    except KeyError:
        with pytest.raises(ConfigError, match=r"no user 'mailwright'.*useradd --system"):
            service_account(ServiceSection())
    with pytest.raises(ConfigError, match="no group"):
        service_account(ServiceSection(user="nobody", group="no-such-group-x"))


def test_settings_that_need_a_restart_are_kept_on_reload(tmp_path: Path) -> None:
    old = Settings.model_validate(
        {"listeners": [{"port": 2525}], "queue": {"directory": str(tmp_path / "a")}}
    )
    new = Settings.model_validate(
        {
            "listeners": [{"port": 2526}],
            "queue": {"directory": str(tmp_path / "b"), "first_retry": 60},
            "service": {"user": "nobody", "root_programs": True},
            "local_delivery": {"pipe_timeout": 5},
        }
    )
    settings, kept = effective_settings(old, new)
    assert kept == ["listeners", "queue.directory", "service.user/group/pid_file"]
    assert settings.listeners == old.listeners
    assert settings.queue.directory == tmp_path / "a"
    assert settings.queue.first_retry == 60  # the rest of the section is new
    assert settings.service.user == "mailwright" and settings.service.root_programs is True
    assert settings.local_delivery.pipe_timeout == 5
    assert effective_settings(old, old) == (old, [])


def test_sighup_compiles_an_alias_file_newer_than_its_table(tmp_path: Path) -> None:
    (tmp_path / "aliases").write_text("team: alice\n")
    settings = Settings.model_validate(
        {
            "queue": {"directory": str(tmp_path)},
            "routing": {"alias_file": str(tmp_path / "aliases")},
        }
    )
    refresh_aliases(settings)
    table = settings.alias_database
    assert table.exists()
    before = table.stat().st_mtime_ns
    refresh_aliases(settings)  # unchanged: left alone
    assert table.stat().st_mtime_ns == before
    (tmp_path / "aliases").write_text("team: bob\n")
    os.utime(tmp_path / "aliases", ns=(before + 10**9, before + 10**9))
    refresh_aliases(settings)
    assert table.stat().st_mtime_ns > before


def test_sighup_compiles_another_alias_file_older_than_the_table(tmp_path: Path) -> None:
    # issue 12 item 24: routing.alias_file now names a file put in place with cp -p
    (tmp_path / "old").write_text("team: alice\n")
    (tmp_path / "new").write_text("team: bob\n")
    os.utime(tmp_path / "new", ns=(10**18, 10**18))  # long before the table is built
    first = {
        "queue": {"directory": str(tmp_path)},
        "routing": {"alias_file": str(tmp_path / "old")},
    }
    refresh_aliases(Settings.model_validate(first))
    second = {**first, "routing": {"alias_file": str(tmp_path / "new")}}
    settings = Settings.model_validate(second)
    refresh_aliases(settings)
    table = AliasTable(settings.alias_database)
    try:
        assert table.info()["source"] == str(tmp_path / "new")
        assert table.lookup("team") == (Item(ItemKind.ADDRESS, "bob"),)
    finally:
        table.close()


@root_only
def test_handing_the_queue_over_follows_no_link(tmp_path: Path) -> None:
    from mailwright.daemon.privileges import hand_over_queue

    account = service_account(ServiceSection(user="nobody"))
    assert account is not None
    victim = tmp_path / "victim"
    victim.write_text("root's")
    queue = tmp_path / "queue"
    queue.mkdir()
    (queue / "queue.db").write_text("")
    (queue / "metrics").mkdir()  # left by a run as root: the workers write there
    (queue / "tmp").symlink_to(victim)  # left by the account: must not become its file
    bodies = queue / "queue.db.bodies"
    bodies.mkdir()  # the body log of a run as root: the workers read and remove its segments
    (bodies / "segment").write_text("")
    (bodies / "link").symlink_to(victim)
    settings = Settings.model_validate({"queue": {"directory": str(queue)}})
    hand_over_queue(settings, account)
    assert queue.stat().st_uid == account.uid
    assert (queue / "queue.db").stat().st_uid == account.uid
    assert (queue / "metrics").stat().st_uid == account.uid
    assert bodies.stat().st_uid == (bodies / "segment").stat().st_uid == account.uid
    assert victim.stat().st_uid == 0


def test_the_queue_store_is_kept_on_reload(tmp_path: Path) -> None:
    old = Settings.model_validate({"queue": {"directory": str(tmp_path)}})
    new = Settings.model_validate(
        {"queue": {"directory": str(tmp_path), "backend": "postgresql", "postgresql": "host=db"}}
    )
    settings, kept = effective_settings(old, new)
    assert kept == ["queue.backend/postgresql"]
    assert settings.queue.backend == "sqlite" and settings.queue.postgresql == ""
