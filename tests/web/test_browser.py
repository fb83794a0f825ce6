"""A real browser on the demo cluster: headless Chromium (Debian's package) driven by Selenium.

The browser logs in on one node, follows the page's links to the other
nodes (each says which node served it), stays logged in with the same
session, increments the counter on two nodes and sees the sum on the third,
logs out, and is logged out everywhere.  The session cookie is checked as
the browser stored it and as the server sent it: HttpOnly (invisible to
``document.cookie``), SameSite=Lax, Path=/, Max-Age matching the session's
life, and not Secure, because the demo turns Secure off explicitly for plain
http on 127.0.0.1 and says so on the page.

Chromium is installed by ``scripts/testbed/browser-up`` on first use.  Where
it cannot be installed or started, the test is skipped with the reason, or
fails under ``FSSESSION_REQUIRE_SHARED=1`` (CI), as the testbeds do
(tests/fsbed.py).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO
from tests.support.fixtures import unavailable
from tools.demo.config import MAX_AGE  # the demo's session lifetime: the cookie's Max-Age

BROWSER_UP = REPO / "scripts" / "testbed" / "browser-up"
START_TIMEOUT = 60.0
WAIT = 20.0  # a hang guard for page loads, never a timing assertion

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium under Selenium, with the network log on (to read the raw Set-Cookie headers)."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        unavailable(f"selenium is not installed ({exc}); run scripts/bootstrap")
    try:
        up = subprocess.run([str(BROWSER_UP)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"cannot run {BROWSER_UP}: {exc}")
    if up.returncode != 0:
        unavailable(f"headless Chromium unavailable: {up.stderr.strip()[-800:]}")
    found = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    options = webdriver.ChromeOptions()
    options.binary_location = found["CHROMIUM"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)  # --no-sandbox: the suite runs as root, where Chromium's sandbox refuses
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=found["CHROMEDRIVER"]))
    except WebDriverException as exc:
        unavailable(f"chromedriver could not start Chromium: {str(exc).strip()[:800]}")
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``scripts/demo --serve`` on *tmp_path*: the three nodes' URLs by name; stopped (SIGTERM) afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.demo", "--serve", "--path", str(tmp_path)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    try:
        for line in proc.stdout:  # the demo prints the URLs, then "serving:" once every node is up
            lines.append(line)
            if m := re.match(r"\s+(web-\d)\s+(http://127\.0\.0\.1:\d+/)", line):
                urls[m.group(1)] = m.group(2)
            if line.startswith("serving:") or time.monotonic() > deadline:
                break
        assert len(urls) == 3 and lines[-1].startswith("serving:"), "the demo did not start:\n" + "".join(lines)
        assert "Secure is OFF (secure=False, set explicitly" in "".join(lines)
        yield urls
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines)


def text(driver: Any, element_id: str) -> str:
    """The text of the element with this id on the current page."""
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def click(driver: Any, element_id: str = "", *, link_text: str | None = None) -> None:
    """Click a button by id (or a link by its text) and wait for the next page to load."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    target = driver.find_element(By.LINK_TEXT, link_text) if link_text else driver.find_element(By.ID, element_id)
    target.click()

    def replaced(_: Any) -> bool:
        # The old page's element is gone once the next page loaded.  Chromium
        # sometimes reports that mid-navigation as an "unhandled inspector
        # error" instead of a stale element, hence any WebDriverException.
        try:
            old.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(driver, WAIT).until(replaced)
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return document.readyState") == "complete")


def set_cookie_headers(driver: Any) -> list[str]:
    """Every raw ``Set-Cookie`` value the browser received since the last call (from its network log)."""
    found: list[str] = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.responseReceivedExtraInfo":
            continue
        for name, value in message["params"].get("headers", {}).items():
            if name.lower() == "set-cookie":
                found += value.split("\n")  # Chromium joins repeated headers with newlines
    return found


def test_browser_follows_the_session_across_nodes(browser: Any, cluster: dict[str, str]) -> None:
    """Log in on web-1, move to web-2 and web-3 by the page's links, count, log out: one session throughout."""
    driver = browser
    driver.delete_all_cookies()
    set_cookie_headers(driver)  # drop what earlier pages logged

    driver.get(cluster["web-1"])
    assert text(driver, "node") == "web-1"
    assert text(driver, "anonymous") == "Not logged in."
    assert "Secure is off in this demo" in text(driver, "cookie-note")

    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "user-input").send_keys("carol")
    click(driver, "login")
    assert (text(driver, "node"), text(driver, "user"), text(driver, "counter")) == ("web-1", "carol", "0")
    session = text(driver, "session")
    assert re.fullmatch(r"[0-9a-f]{12}", session)

    # The cookie as the browser keeps it ...
    cookies = {c["name"]: c for c in driver.get_cookies()}
    assert set(cookies) == {"fssession"}
    cookie = cookies["fssession"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["secure"] is False  # explicitly off in the demo (plain http), as it says
    assert abs(cookie["expiry"] - (time.time() + MAX_AGE)) < 30, "the cookie lives as long as the session"
    # ... HttpOnly means the page's scripts cannot read it ...
    assert "fssession" not in driver.execute_script("return document.cookie")
    # ... and as the server sent it (at login, and refreshed with each page).
    headers = [h for h in set_cookie_headers(driver) if h.startswith("fssession=")]
    assert headers, "no Set-Cookie for the session was seen"
    for header in headers:
        attrs = [part.strip() for part in header.split(";")[1:]]
        assert "HttpOnly" in attrs and "SameSite=Lax" in attrs and "Path=/" in attrs, header
        assert f"Max-Age={MAX_AGE}" in attrs, header
        assert "Secure" not in attrs, header

    # Follow the page's own links: each node serves the same session.
    served = ["web-1"]
    click(driver, link_text="web-2")
    served.append(text(driver, "node"))
    assert (text(driver, "user"), text(driver, "session")) == ("carol", session)
    click(driver, "incr")
    assert (text(driver, "node"), text(driver, "counter")) == ("web-2", "1")

    click(driver, link_text="web-3")
    served.append(text(driver, "node"))
    assert (text(driver, "user"), text(driver, "session"), text(driver, "counter")) == ("carol", session, "1")
    click(driver, "incr")
    assert (text(driver, "node"), text(driver, "counter")) == ("web-3", "2")

    click(driver, link_text="web-1")
    served.append(text(driver, "node"))
    assert (text(driver, "user"), text(driver, "session"), text(driver, "counter")) == ("carol", session, "2")
    assert served == ["web-1", "web-2", "web-3", "web-1"], "each page must come from the node it links to"

    # Log out on web-1: the cookie is cleared, and no node knows carol any more.
    set_cookie_headers(driver)
    click(driver, "logout")
    assert text(driver, "node") == "web-1"
    assert text(driver, "anonymous") == "Not logged in."
    assert [c["name"] for c in driver.get_cookies()] == []
    assert any(h.startswith("fssession=;") and "Max-Age=0" in h for h in set_cookie_headers(driver))
    for name in ("web-2", "web-3"):
        driver.get(cluster[name])
        assert (text(driver, "node"), text(driver, "anonymous")) == (name, "Not logged in.")
