"""The Temporal Web UI, in a real headless Chromium, shows drafts decrypted through our codec
endpoint — and encrypted without it.

Each test starts its own dev server with the UI (`--ui-port`, and `--ui-codec-endpoint` pointing
at the test's API, as `make dev` does), a worker and an API, enrols a lead and opens the draft's
"Activity Task Completed" event page with Selenium. Screenshots and the codec request the browser
sent go to `var/test-artifacts/`.

The browser is Debian's `chromium` and `chromium-driver` (`tests/helpers/browser.py`: installed
with apt-get when missing; where that is impossible the tests skip saying why, and fail under CI).
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
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
from tests.helpers.browser import (
    ARTIFACTS,
    chromium,
    ensure_browser_installed,
    page_shows,
    requests_sent,
    screenshot,
)
from worker import build_worker

# Installing the browser (first run on a fresh machine) takes a minute or two, within the test.
pytestmark = pytest.mark.timeout(600)

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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    ensure_browser_installed()
    with chromium(tmp_path / "chromium") as driver:
        yield driver


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


def codec_requests(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """The requests the page sent to a codec endpoint, from Chromium's network log."""
    return [request for request in requests_sent(browser) if "/codec/" in request["url"]]


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
