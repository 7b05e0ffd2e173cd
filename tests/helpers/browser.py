"""A real headless Chromium for the browser tests (the Temporal Web UI, the API's `/docs`).

The browser is Debian's `chromium` and `chromium-driver`, driven by Selenium:
`ensure_browser_installed` installs them with apt-get when they are missing (CI runs as root on a
fresh machine). Where that is impossible the tests skip saying why; under CI (`CI` set) they fail
instead, since CI must run them.

Screenshots: `screenshot` always writes to `var/test-artifacts/` (ignored by git, for a failing
test's reader); with `CAMPAIGN_ENGINE_WRITE_SCREENSHOTS=1` it also writes the how-to's copy under
`docs/img/web-ui/`, so an ordinary test run never changes the tree.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "var" / "test-artifacts"
DOCS_SCREENSHOTS = ROOT / "docs" / "img" / "web-ui"
WRITE_SCREENSHOTS = "CAMPAIGN_ENGINE_WRITE_SCREENSHOTS"
"""Set to `1` to (re)write the how-to's screenshots under `docs/img/web-ui/`."""
# Flags for a headless browser in a container with no GPU, no network but ours, and no profile.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1920,1080",
)
OFFLINE_FLAGS = (
    # Every host name but the loopback ones fails to resolve, and every connection that is not
    # to loopback goes to a proxy that does not exist (port 9, discard, nothing listens): a page
    # that needs anything outside this machine cannot get it.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<local>;127.0.0.1;localhost",
)
"""Chromium with no network beyond 127.0.0.1: what `/docs` sees on a machine without internet."""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but: {reason}", pytrace=False)
    pytest.skip(reason)


def _install_browser() -> None:
    """apt-get install Debian's chromium and its driver (root only)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        _unavailable("no chromium and no way to install it (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            _unavailable(f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")


def ensure_browser_installed() -> None:
    """Chromium and chromedriver are at `CHROMIUM` and `CHROMEDRIVER`, installed if need be;
    skips the test (fails it under CI) when they cannot be."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _install_browser()
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _unavailable(f"{CHROMIUM} or {CHROMEDRIVER} still missing after apt-get install")


@contextmanager
def chromium(profile: Path, *, offline: bool = False) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with its profile in `profile` and its network log on (read with
    `requests_sent`); `offline`: nothing beyond 127.0.0.1 reachable (`OFFLINE_FLAGS`). Quit on
    exit."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    flags = (*CHROMIUM_FLAGS, *(OFFLINE_FLAGS if offline else ()))
    for flag in (*flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def requests_sent(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """Every request the page sent since the last call (Chromium's network log, which reading
    empties), as DevTools' `Network.Request` objects (`url`, `method`, `headers`, `postData`)."""
    requests = []
    for entry in browser.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request: dict[str, Any] = message["params"]["request"]
            requests.append(request)
    return requests


async def page_shows(browser: webdriver.Chrome, text: str, within: float = 30.0) -> bool:
    """Waits for a single-page app to render `text` (it loads and decodes asynchronously)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if text in browser.page_source:
            return True
        await asyncio.sleep(0.5)
    return False


def screenshot(browser: webdriver.Chrome, name: str, *, for_docs: bool = False) -> Path:
    """Saves the page as `var/test-artifacts/<name>` (returned); `for_docs` (the caller has
    asserted what the page shows) also as `docs/img/web-ui/<name>` when
    `CAMPAIGN_ENGINE_WRITE_SCREENSHOTS=1`."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    browser.save_screenshot(str(path))
    if for_docs and os.environ.get(WRITE_SCREENSHOTS) == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / name)
    return path
