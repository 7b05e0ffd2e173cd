"""The Temporal Web UI, in a real headless Chromium, shows drafts decrypted through our codec
endpoint — and encrypted without it.

Each test starts its own dev server with the UI (`--ui-port`, and `--ui-codec-endpoint` pointing
at the test's API, as `make dev` does), a worker and an API, enrols a lead and opens the draft's
"Activity Task Completed" event page with Selenium. Screenshots and the codec request the browser
sent go to `var/test-artifacts/`.

The browser is Debian's `chromium` and `chromium-driver`: the `browser` fixture installs them with
apt-get when they are missing (CI runs as root on a fresh machine). Where that is impossible the
tests skip saying why; under CI (`CI` set) they fail instead, since CI must run them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from campaign_engine.codec import ENCODING
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from entrypoints.devserver import DevServer, free_port
from tests.helpers import (
    Api,
    create_campaign,
    enrol,
    handle_of,
    lead,
    running_api,
    wait_for_status,
)
from worker import build_worker

# Installing the browser (first run on a fresh machine) takes a minute or two, within the test.
pytestmark = pytest.mark.timeout(600)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"
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
SUBJECT = "Quokka terms for Philippa"
CAMPAIGN: dict[str, Any] = {
    "name": "Web UI",
    "approvalTimeout": "P7D",
    "steps": [
        {
            "id": "intro",
            "subject": "Quokka terms for {{ lead.firstName }}",
            "body": "Dear {{ lead.firstName }}",
            "requiresApproval": True,
        }
    ],
}


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


@pytest.fixture(scope="session")
def browser_installed() -> None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _install_browser()
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _unavailable(f"{CHROMIUM} or {CHROMEDRIVER} still missing after apt-get install")


@pytest.fixture
def browser(browser_installed: None, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    # The network log is how the test sees the codec requests the UI sends.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class UiStack:
    client: Client
    api: Api
    ui_url: str


@asynccontextmanager
async def ui_stack(settings: Settings, *, with_codec: bool) -> AsyncIterator[UiStack]:
    """A dev server with its Web UI (pointed at our codec endpoint or not), a worker and an API.

    As under `make dev`, the local UI may use the codec endpoints without a key.
    """
    ui_port = free_port()
    settings = settings.model_copy(
        update={"temporal_ui_port": ui_port, "codec_allow_local_ui_without_key": True}
    )
    endpoint = f"http://127.0.0.1:{settings.api_port}/codec" if with_codec else None
    server = DevServer(ui_port=ui_port, ui_codec_endpoint=endpoint)
    await server.start()
    try:
        settings = settings.model_copy(update={"temporal_address": server.address})
        client = await connect(settings)
        store = await Store.open(settings.resolved_database_url)
        try:
            async with build_worker(client, settings, store), running_api(settings, client) as api:
                yield UiStack(client, api, f"http://127.0.0.1:{ui_port}")
        finally:
            await store.close()
    finally:
        await server.stop()


async def open_draft_event(stack: UiStack, browser: webdriver.Chrome) -> Payload:
    """Enrols a lead, waits at its gate and opens, in the browser, the event page of the draft's
    completed activity; returns the draft (the activity's result) as Temporal stores it."""
    campaign = await create_campaign(stack.api, CAMPAIGN)
    instance_id = await enrol(stack.api, campaign, lead(firstName="Philippa"))
    await wait_for_status(stack.api, campaign, instance_id, hasPendingApproval=True)
    handle = handle_of(stack.client, campaign, instance_id)
    history = await handle.fetch_history()
    [completed] = [
        event
        for event in history.events
        if event.HasField("activity_task_completed_event_attributes")
    ]
    run_id = history.events[0].workflow_execution_started_event_attributes.original_execution_run_id
    workflow_id = urllib.parse.quote(handle.id, safe="")
    browser.get(
        f"{stack.ui_url}/namespaces/default/workflows/{workflow_id}/{run_id}"
        f"/history/events/{completed.event_id}"
    )
    [draft] = completed.activity_task_completed_event_attributes.result.payloads
    return draft


async def page_shows(browser: webdriver.Chrome, text: str, within: float = 30.0) -> bool:
    """Waits for the single-page app to render `text` (it loads and decodes asynchronously)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if text in browser.page_source:
            return True
        await asyncio.sleep(0.5)
    return False


def codec_requests(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """The requests the page sent to a codec endpoint, from Chromium's network log."""
    requests = []
    for entry in browser.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request: dict[str, Any] = message["params"]["request"]
            if "/codec/" in request["url"]:
                requests.append(request)
    return requests


def screenshot(browser: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    browser.save_screenshot(str(path))
    return path


async def test_web_ui_shows_the_draft_decrypted_through_the_codec(
    settings: Settings, browser: webdriver.Chrome
) -> None:
    async with ui_stack(settings, with_codec=True) as stack:
        draft = await open_draft_event(stack, browser)
        assert draft.metadata["encoding"] == ENCODING
        shown = await page_shows(browser, SUBJECT)
        shot = screenshot(browser, "web-ui-codec-decoded.png")
        assert shown, f"the UI never showed {SUBJECT!r}; see {shot}"

        # What the UI sent: one Payloads JSON per request, as the checked-in capture says.
        posts = [r for r in codec_requests(browser) if r["method"] == "POST"]
        assert posts and all(r["url"].split("?")[0].endswith("/codec/decode") for r in posts)
        (ARTIFACTS / "web-ui-codec-requests.json").write_text(json.dumps(posts, indent=1))
        captured = json.loads((Path(__file__).parent / "codec_ui_request.json").read_text())
        for post in posts:
            assert post["headers"]["Content-Type"] == "application/json"
            assert post["headers"]["X-Namespace"] == "default"
            body = json.loads(post["postData"])
            assert set(body) == set(json.loads(captured["body"])) == {"payloads"}
            for payload in body["payloads"]:
                assert set(payload) == {"metadata", "data"}
                assert base64.b64decode(payload["metadata"]["encoding"]) == ENCODING
        # Each request the browser made decodes again through the endpoint (no key: the local UI).
        replay = await stack.api.http.post(
            urllib.parse.urlsplit(posts[0]["url"])._replace(scheme="", netloc="").geturl(),
            content=posts[0]["postData"],
            headers={
                "Content-Type": "application/json",
                "X-Namespace": "default",
                "Origin": stack.ui_url,
            },
        )
        assert replay.status_code == 200, replay.text


async def test_web_ui_without_the_codec_shows_the_draft_encrypted(
    settings: Settings, browser: webdriver.Chrome
) -> None:
    async with ui_stack(settings, with_codec=False) as stack:
        draft = await open_draft_event(stack, browser)
        ciphertext = base64.b64encode(draft.data).decode()[:24]
        shown = await page_shows(browser, ciphertext)
        shot = screenshot(browser, "web-ui-no-codec-encrypted.png")
        assert shown, f"the UI never showed the encrypted result; see {shot}"
        assert SUBJECT not in browser.page_source
        assert "Philippa" not in browser.page_source
        assert codec_requests(browser) == []
