"""Token, session cookie and CSRF checks of the status page."""

from __future__ import annotations

from mailwright.web.credentials import COOKIE, Credentials, Proof
from mailwright.web.webserver import Request

NOW = 1_800_000_000.0


def request(**headers: str) -> Request:
    return Request("GET", "/status", {}, {k.lower(): v for k, v in headers.items()})


def test_bearer_token() -> None:
    creds = Credentials("right-token")
    assert creds.identify(request(Authorization="Bearer right-token"), NOW).proof is Proof.BEARER
    assert creds.identify(request(Authorization="bearer right-token"), NOW).proof is Proof.BEARER
    assert creds.identify(request(Authorization="Bearer wrong-token"), NOW).proof is Proof.BAD
    assert creds.identify(request(Authorization="Basic right-token"), NOW).proof is Proof.BAD
    assert creds.identify(request(), NOW).proof is Proof.NONE


def test_cookie_is_signed_expires_and_does_not_hold_the_token() -> None:
    creds = Credentials("right-token", lifetime=3600)
    cookie = creds.new_cookie(NOW)
    assert "right-token" not in cookie
    sent = request(Cookie=f"other=1; {COOKIE}={cookie}")
    identity = creds.identify(sent, NOW + 10)
    assert identity.proof is Proof.COOKIE and identity.session == cookie.split(".")[2]
    assert creds.identify(sent, NOW + 3601).proof is Proof.BAD  # expired
    assert creds.identify(sent, NOW - 10).proof is Proof.BAD  # from the future
    forged = cookie.replace(cookie.split(".")[1], str(int(NOW) + 1000))  # a later issue time
    assert creds.identify(request(Cookie=f"{COOKIE}={forged}"), NOW).proof is Proof.BAD
    assert creds.identify(request(Cookie=f"{COOKIE}=garbage"), NOW).proof is Proof.BAD
    assert Credentials("new-token-x").identify(sent, NOW + 10).proof is Proof.BAD


def test_csrf_token_belongs_to_one_session() -> None:
    creds = Credentials("right-token")
    token = creds.csrf("session-a")
    assert creds.check_csrf("session-a", token)
    assert not creds.check_csrf("session-b", token)
    assert not creds.check_csrf("", creds.csrf(""))
    assert not Credentials("other-token").check_csrf("session-a", token)


def test_no_token_configured_accepts_nothing() -> None:
    creds = Credentials("")
    assert not creds.enabled and not creds.check_token("")
    assert creds.identify(request(Authorization="Bearer "), NOW).proof is Proof.BAD
    assert creds.session_of(creds.new_cookie(NOW), NOW) is None
