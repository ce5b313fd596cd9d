"""Bad input gives the right sysexits code and one line on stderr, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.peers import is_root, peer
from tests.support.sendmail import Tools, daemon_tools, short_tmp, smtp_over_pipe


@pytest.fixture(scope="module")
def tools() -> Iterator[Tools]:
    with daemon_tools({"server": {"max_message_size": 2000}}) as tools:
        yield tools


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text
    assert text.count("\n") == 1 and text.startswith("mailwright: "), text
    return text


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        ((), b"x\n", 64, "no recipients given"),
        (("-t",), b"Subject: none\n\nx\n", 64, "no recipient addresses found in the header"),
        (("-t", "a@x.test"), b"To: a@x.test\n\nx\n", 64, "no recipient addresses found"),
        (("-Z", "u"), b"x\n", 64, "invalid option -- 'Z'"),
        (("-bz",), b"", 64, "invalid operation mode"),
        (("-N", "often", "u"), b"x\n", 64, "-N wants never"),
        (("-f",), b"", 64, "option requires an argument -- 'f'"),
        (("-h", "lots", "u"), b"x\n", 64, "-h wants a hop count"),
        (("-bt",), b"", 69, "the address test shell (-bt) is not supported; use -bv ADDRESS"),
        (("-bv",), b"", 64, "-bv wants at least one address"),
        (("u",), b"x" * 5000, 65, "larger than the limit of 2000 octets"),
        (("bad address@@x.test",), b"x\n", 67, "Bad recipient address syntax"),
        (("-f", "not an@address@", "u"), b"x\n", 65, "sender refused"),
    ],
)
def test_bad_input(
    tools: Tools, args: tuple[str, ...], stdin: bytes, code: int, message: str
) -> None:
    before = tools.queue_ids()
    proc = tools.run(*args, input=stdin)
    assert proc.returncode == code, proc.stderr
    assert message in one_line(proc.stderr)
    assert tools.queue_ids() == before


def test_some_bad_recipients_the_rest_is_queued(tools: Tools) -> None:
    before = tools.queue_ids()
    proc = tools.run("good@x.test", "bad address@@x", input=b"x\n")
    assert proc.returncode == 0
    assert "<bad address@@x>: 553 5.1.3" in one_line(proc.stderr)
    (new,) = tools.queue_ids() - before
    stored, _, _ = tools.read(new)
    assert [str(r.address) for r in stored.envelope.recipients] == ["good@x.test"]


def test_quiet_error_mode_keeps_only_the_exit_code(tools: Tools) -> None:
    proc = tools.run("-oeq", "bad address@@x.test", input=b"x\n")
    assert proc.returncode == 67 and proc.stderr == b""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("[queue\n", "TOML syntax error"),
        ("[queue]\ndirectory = 5\n", "queue.directory: must be a string"),
        ("hostname = 'has space'\n", "hostname: must be a host name"),
    ],
)
def test_bad_configuration_is_78(
    tools: Tools, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "mailwright.toml"
    if content is not None:
        path.write_text(content)
    for args in (("u",), ("-bp",), ("-bs",), ("-bv", "u")):
        proc = tools.run("-C", str(path), *args, input=b"x\n")
        assert proc.returncode == 78, (args, proc.stderr)
        assert message in one_line(proc.stderr)
        assert str(path) in proc.stderr.decode()


@peer("root", is_root(), "runs the command as another user")
def test_unreadable_configuration_is_78(tools: Tools) -> None:
    with short_tmp() as root:
        path = root / "secret.toml"
        path.write_text('hostname = "x"\n')
        path.chmod(0o600)
        proc = tools.run("-C", str(path), "u", input=b"x\n", user="nobody")
    assert proc.returncode == 78
    assert "permission denied" in one_line(proc.stderr)


def test_nothing_reachable_is_75(tools: Tools, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[queue]\ndirectory = "{tmp_path / "nowhere"}"\n')
    proc = tools.run("-C", str(path), "u", input=b"x\n")
    assert proc.returncode == 75
    assert "the daemon is unavailable and the maildrop" in one_line(proc.stderr)


def test_full_program_names_dispatch(tools: Tools) -> None:
    proc = tools.run("-bV")
    assert proc.returncode == 0 and proc.stdout.startswith(b"Mailwright ")


def test_the_daemon_checks_local_mail_like_network_mail(tools: Tools) -> None:
    """-bs goes to the daemon's own dialogue: its size limit and loop detection apply."""
    client, proc = smtp_over_pipe(tools)
    client.ehlo("c")
    client.mail("a@x.test")
    client.rcpt("b@x.test")
    code, text = client.data(b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n")
    assert (code, text[:5]) == (552, b"5.3.4")
    client.mail("a@x.test")
    client.rcpt("b@x.test")
    hops = b"Received: x\r\n" * 51
    code, text = client.data(hops + b"\r\nx\r\n")
    assert (code, text[:5]) == (554, b"5.4.6")
    client.quit()
    assert proc.wait(10) == 0


def test_control_characters_in_addresses_never_reach_the_dialogue(tools: Tools) -> None:
    proc = tools.run("a@x.test\r\nRSET", input=b"x\n")
    assert proc.returncode == 67
    assert "control character" in one_line(proc.stderr)
    proc = tools.run("-f", "a@x.test>\r\nRSET", "b@x.test", input=b"x\n")
    assert proc.returncode == 65
