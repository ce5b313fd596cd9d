"""Settings of TLS, AUTH, the access table and the outbound TLS policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.config.loader import ConfigError, load_settings
from mailwright.config.schema import ListenerAuth, TlsLevel


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "mailwright.toml"
    path.write_text(text)
    return load_settings(path)


def test_defaults_offer_nothing_without_files(tmp_path: Path) -> None:
    s = load(tmp_path, "")
    assert s.tls.certificate is None and s.auth.users_file is None and s.access.table is None
    assert s.delivery.tls_default is TlsLevel.MAY and s.server.greet_pause == 0
    assert s.server.max_connection_rate_per_ip == 0


def test_listener_defaults_by_kind(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        '[[listeners]]\nport = 25\n[[listeners]]\nport = 587\nkind = "submission"\n'
        '[[listeners]]\nport = 24\nkind = "lmtp"\n'
        '[[listeners]]\nport = 2526\nauth = "require"\nrequire_tls = true\n',
    )
    smtp, sub, lmtp, strict = s.listeners
    assert (smtp.auth_mode, smtp.tls_required) == (ListenerAuth.OFFER, False)
    assert (sub.auth_mode, sub.tls_required) == (ListenerAuth.REQUIRE, True)
    assert lmtp.auth_mode is ListenerAuth.OFF
    assert (strict.auth_mode, strict.tls_required) == (ListenerAuth.REQUIRE, True)


def test_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        '[tls]\ncertificate = "c.pem"\nkey = "k.pem"\n[auth]\nusers_file = "users"\n'
        '[access]\ntable = "access"\n[delivery]\ntls_ca_file = "ca.pem"\n'
        'tls_policy = { "bank.test" = "verify", "[relay.test]" = "encrypt" }\n',
    )
    assert s.tls.certificate == tmp_path / "c.pem" and s.tls.key == tmp_path / "k.pem"
    assert s.auth.users_file == tmp_path / "users" and s.access.table == tmp_path / "access"
    assert s.delivery.tls_ca_file == tmp_path / "ca.pem"
    assert s.delivery.tls_policy["bank.test"] is TlsLevel.VERIFY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[listeners]]\nport = 465\ntls = "implicit"\n', "[tls] certificate is not set"),
        ('[tls]\nkey = "k.pem"\n', "key is set but certificate is not"),
        ('[tls]\ncertificate = "c"\nmin_version = "TLSv1.1"\n', "tls.min_version"),
        ('[auth]\nmechanisms = ["CRAM-MD5"]\n', "auth.mechanisms"),
        ('[[listeners]]\nport = 25\nauth = "maybe"\n', "listeners.0.auth"),
        ('[delivery]\ntls_policy = { "a b" = "verify" }\n', "is not a domain or [host]"),
        ('[delivery]\ntls_policy = { "x.test" = "secure" }\n', "delivery.tls_policy"),
        ("[server]\nmax_connection_rate_per_ip = -1\n", "max_connection_rate_per_ip"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    assert message in str(exc.value) and str(tmp_path / "mailwright.toml") in str(exc.value)
