"""t09: the status page end to end in headless Chromium (Selenium and Debian's chromium).

A real daemon with traffic (a hostile message, deferrals to a closed port); the
browser logs in with the token, checks that the plots render (coloured pixels
inside each plot's data area of a real screenshot), that hostile mail stays
text, and presses Hold, Release and Delete on a message's page.
"""

from __future__ import annotations

import json
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.web.plot import BOTTOM, LEFT, RIGHT, TOP
from tests.support import browser, png
from tests.support.daemon import Mailwright, free_port, wait_until
from tests.support.peers import peer
from tests.support.web import Web, value

pytestmark = peer("headless Chromium", browser.missing() is None, str(browser.missing()))

TOKEN = "browser-token-5678"
HOSTILE_SUBJECT = '<img src=x onerror="document.title=1"> <script>document.title=2</script>'
HOSTILE_SENDER = '"<script>alert(3)</script>"@evil.test'


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with browser.chromium() as d:
        yield d


@pytest.fixture
def mw(tmp_path: Path) -> Iterator[Mailwright]:
    root = tmp_path / "mw"
    root.mkdir(parents=True)
    (root / "transport").write_text("* smtp:[127.0.0.1]:1\n")  # a closed port: defer at once
    daemon = Mailwright(
        root,
        {
            "delivery": {"mode": "background"},
            "routing": {"transport_table": str(root / "transport")},
            "queue": {"host_status_timeout": 0},
            "http": {"port": free_port(), "token": TOKEN},
        },
    ).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def send(mw: Mailwright, sender: str, subject: str, rcpts: tuple[str, ...]) -> str:
    with smtplib.SMTP("127.0.0.1", mw.port, timeout=20) as client:
        client.ehlo("client.test")
        client.mail(sender)
        for rcpt in rcpts:
            client.rcpt(rcpt)
        code, text = client.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
    assert code == 250
    found = re.search(rb"2\.0\.0 (\w+) Message", text)
    assert found
    return found.group(1).decode()


def plot_pixels(driver: Any, element_id: str) -> int:
    """Saturated pixels inside a plot's data area (not its legend, labels or axes)."""
    element = driver.find_element("id", element_id)
    image = png.decode(element.screenshot_as_png)
    scale = image.width / element.size["width"]
    box = (
        int((LEFT + 2) * scale),
        int((TOP + 2) * scale),
        int(image.width - RIGHT * scale),
        int(image.height - (BOTTOM + 1) * scale),
    )
    return image.count(png.coloured, box)


def login(driver: Any, base: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/status")
    assert driver.find_elements("name", "token"), "no login form"
    assert not driver.find_elements("id", "plots")
    driver.find_element("name", "token").send_keys(TOKEN)
    driver.find_element("css selector", "form[action='/login'] button").click()
    wait_until(lambda: driver.find_elements("id", "plots"), what="the status page")


def test_status_page_in_chromium(driver: Any, mw: Mailwright) -> None:
    base = f"http://127.0.0.1:{mw.config['http']['port']}"
    hostile = send(mw, HOSTILE_SENDER, HOSTILE_SUBJECT, ("b@y.test",))
    send(mw, "a@x.test", "second", ("c@z.test", "d@z.test"))
    web = Web(mw.config["http"]["port"])
    wait_until(
        lambda: value(web.scrape(), "mailwright_queue_recipients", state="deferred") == 3,
        what="three deferred recipients",
    )

    login(driver, base)
    assert driver.title == "Mailwright status"
    # the plots render: data drawn inside the plot areas, not just axes and legends
    assert plot_pixels(driver, "plot-queue") > 100
    assert plot_pixels(driver, "plot-throughput") > 100
    # hostile mail is text: no element came from it, no script ran
    assert driver.find_elements("css selector", "script") == []
    assert driver.find_elements("css selector", "main img") == []
    assert driver.title == "Mailwright status"
    messages = driver.find_element("id", "messages").text
    assert "<script>alert(3)</script>" in messages
    deferred = driver.find_element("id", "deferred").text
    assert "y.test" in deferred and "z.test" in deferred and "4.4.1" in deferred

    # one message's page, then Hold (with a reason), Release and Delete
    driver.find_element("link text", hostile).click()
    wait_until(lambda: driver.find_elements("id", "envelope"), what="the message page")
    envelope = driver.find_element("id", "envelope").text
    assert HOSTILE_SUBJECT in envelope and driver.find_elements("css selector", "main img") == []
    assert HOSTILE_SUBJECT in driver.find_element("id", "headers").text

    driver.find_element("name", "reason").send_keys("looks <b>odd</b>")
    driver.find_element("css selector", "button[value='hold']").click()
    wait_until(lambda: driver.find_elements("id", "notice"), what="the notice")
    assert driver.find_element("id", "notice").text == "held: 1 message(s)."
    assert "hold (looks <b>odd</b>)" in driver.find_element("id", "envelope").text
    shown = json.loads(mw.cli("queue", "show", "--json", hostile).stdout)
    assert shown["state"] == "hold" and shown["hold_reason"] == "looks <b>odd</b>"

    driver.find_element("css selector", "button[value='release']").click()
    wait_until(lambda: "released" in notice_text(driver), what="release")
    assert json.loads(mw.cli("queue", "show", "--json", hostile).stdout)["state"] == "active"

    driver.find_element("css selector", "button[value='delete']").click()  # not confirmed
    wait_until(lambda: "confirm" in notice_text(driver), what="refusal")
    assert mw.cli("queue", "show", hostile).returncode == 0
    driver.find_element("name", "confirm").click()
    driver.find_element("css selector", "button[value='delete']").click()
    wait_until(
        lambda: driver.current_url.endswith("/status?done=delete&n=1&missing=0"),
        what="back on the status page",
    )
    assert driver.find_element("id", "notice").text == "deleted: 1 message(s)."
    assert mw.cli("queue", "show", hostile).returncode != 0

    # log out: the page asks for the token again
    driver.find_element("css selector", "form[action='/logout'] button").click()
    wait_until(lambda: driver.find_elements("name", "token"), what="the login form")
    driver.get(f"{base}/status")
    assert driver.find_elements("name", "token") and not driver.find_elements("id", "plots")
    assert TOKEN not in "\n".join(mw.log)


def test_plots_are_blank_without_data(driver: Any, tmp_path: Path) -> None:
    """The pixel check can fail: a daemon that saw nothing draws no bars."""
    root = tmp_path / "idle"
    daemon = Mailwright(root, {"http": {"port": free_port(), "token": TOKEN}}).start()
    try:
        login(driver, f"http://127.0.0.1:{daemon.config['http']['port']}")
        assert plot_pixels(driver, "plot-throughput") == 0
    finally:
        daemon.stop()


def notice_text(driver: Any) -> str:
    """The notice's text, or "" while the next page is loading (no element yet)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        found = driver.find_elements("id", "notice")
        return str(found[0].text) if found else ""
    except StaleElementReferenceException:  # the page was replaced between find and read
        return ""
    except WebDriverException as exc:  # the same race, as Chromium's inspector words it
        if "does not belong to the document" in str(exc):
            return ""
        raise
