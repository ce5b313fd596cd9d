"""The relay credentials table: its format, bad lines as file:line, the lookup order, and the
warning for a file others may read."""

from __future__ import annotations

from pathlib import Path

from mailwright.routing.credentials import (
    candidate_keys,
    exposure,
    load_credentials,
    parse_credentials,
)
from mailwright.routing.nexthop import NextHop, Transport

TABLE = b"""# relay logins
[smtp.isp.test]:587   alice:pa:ss word#1
[SMTP.ISP.test]       bob:other
isp.test              carol:third
[127.0.0.1]:2525      dave:fourth
[IPv6:2001:db8::1]    erin:fifth
"""


def hop(host: str, port: int | None = None, mx: bool = False) -> NextHop:
    return NextHop(Transport.SMTP, host=host, port=port, mx=mx)


def test_entries_and_the_lookup_order() -> None:
    table, errors = parse_credentials(TABLE, "relay-passwords")
    assert errors == [] and len(table) == 5
    found = table.lookup(hop("smtp.isp.test", 587))
    assert found is not None and (found.username, found.password) == ("alice", "pa:ss word#1")
    assert _user(table.lookup(hop("smtp.isp.test", 25))) == "bob"  # without the port
    assert _user(table.lookup(hop("smtp.isp.test"))) == "bob"
    assert _user(table.lookup(hop("isp.test", mx=True))) == "carol"  # an MX route
    assert _user(table.lookup(hop("isp.test", 2525))) == "carol"  # the bare name last
    assert _user(table.lookup(hop("127.0.0.1", 2525))) == "dave"
    assert table.lookup(hop("127.0.0.1", 25)) is None
    assert _user(table.lookup(hop("2001:db8::1", 25))) == "erin"
    assert table.lookup(hop("other.test", mx=True)) is None
    assert table.lookup(NextHop(Transport.LMTP, socket_path="/run/lmtp")) is None


def test_candidate_keys() -> None:
    assert candidate_keys(hop("Relay.Test", 587)) == [
        "[relay.test]:587",
        "[relay.test]",
        "relay.test",
    ]
    assert candidate_keys(hop("example.test", mx=True)) == ["example.test"]


def _user(found: object) -> str | None:
    return getattr(found, "username", None)


def test_bad_lines_are_reported_with_file_and_line_and_skipped() -> None:
    data = (
        b"[good.test]  u:p\n"
        b"[broken.test  u:p\n"
        b"nopassword.test  justuser\n"
        b"empty.test  u:\n"
        b"[good.test]  v:q\n"
        b"alice:lonely\n"
        b"[x.test]:99999  u:p\n"
        b"spaces.test  :secretvalue\n"
    )
    table, errors = parse_credentials(data, "/etc/mailwright/relay-passwords")
    assert len(table) == 1
    lines = [str(e) for e in errors]
    assert [e.line for e in errors] == [2, 3, 4, 5, 6, 7, 8]
    assert lines[0].startswith("/etc/mailwright/relay-passwords:2: key '[broken.test':")
    assert lines[1].endswith(":3: value must be user:password (no ':' found)")
    assert lines[2].endswith(":4: the password of 'u' is empty")
    assert "duplicate key '[good.test]' (first on line 1)" in lines[3]
    assert lines[4].endswith(
        ":6: one word only (expected 'key user:password'; the line is not quoted)"
    )
    assert "port" in lines[5]
    assert "user name is empty" in lines[6]
    assert not any(word in line for line in lines for word in ("secretvalue", "justuser", "lonely"))


def test_file_errors_and_exposure(tmp_path: Path) -> None:
    path = tmp_path / "relay-passwords"
    table, errors = load_credentials(path)
    assert len(table) == 0 and str(errors[0]).startswith(f"{path}: cannot read")
    path.write_bytes(b"[relay.test]  u:p\n")
    path.chmod(0o640)
    warning = exposure(path)
    assert warning is not None and "readable by group or others" in warning and "0640" in warning
    path.chmod(0o600)
    assert exposure(path) is None
    table, errors = load_credentials(path)
    assert errors == [] and len(table) == 1
