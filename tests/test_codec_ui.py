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

import asyncio
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
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from campaign_engine.codec import ENCODING
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from entrypoints.dev import workflow_ui_url
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
        shot = screenshot(browser, "decoded-draft.png", for_docs=shown)
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


def displayed(browser: webdriver.Chrome, css: str) -> list[WebElement]:
    """The elements matching `css` that are shown (the UI keeps hidden copies of its dialogs)."""
    return [
        element for element in browser.find_elements(By.CSS_SELECTOR, css) if element.is_displayed()
    ]


def by_text(browser: webdriver.Chrome, css: str, text: str) -> WebElement:
    """The one shown element matching `css` whose text is `text`."""
    [element] = [element for element in displayed(browser, css) if element.text.strip() == text]
    return element


def menu_item(browser: webdriver.Chrome, text: str) -> WebElement:
    """The one shown element whose own text is `text` (a menu entry)."""
    [element] = [
        element
        for element in browser.find_elements(By.XPATH, f"//*[text()[normalize-space()='{text}']]")
        if element.is_displayed()
    ]
    return element


def text_shown(browser: webdriver.Chrome) -> str:
    """The page's visible text, with that of its frames: the UI renders the Markdown of a
    workflow's summary and details in sandboxed iframes."""
    texts = [browser.find_element(By.TAG_NAME, "body").text]
    for frame in browser.find_elements(By.TAG_NAME, "iframe"):
        browser.switch_to.frame(frame)
        try:
            texts.append(browser.find_element(By.TAG_NAME, "body").text)
        finally:
            browser.switch_to.default_content()
    return "\n".join(texts)


async def text_appears(browser: webdriver.Chrome, *texts: str, within: float = 30.0) -> bool:
    """Waits until the page (frames included) shows every one of `texts`."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        shown = text_shown(browser)
        if all(text in shown for text in texts):
            return True
        await asyncio.sleep(0.5)
    return False


async def url_shows(browser: webdriver.Chrome, part: str, within: float = 30.0) -> str | None:
    """Waits for the single-page app to route to a URL containing `part`; returns it."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if part in browser.current_url:
            return str(browser.current_url)
        await asyncio.sleep(0.5)
    return None


async def enabled(element: WebElement, within: float = 30.0) -> bool:
    """Waits for a control the UI enables once it has loaded (the signal list: the workflow's
    own metadata query)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if element.is_enabled():
            return True
        await asyncio.sleep(0.5)
    return False


async def test_web_ui_tour_of_the_how_to(settings: Settings, browser: webdriver.Chrome) -> None:
    """What docs/how-to/web-ui.md shows, each screenshot taken once the page shows it: the list
    with our search query, `make dev`'s link to an instance, the "User Metadata" tab with the
    summary and current details, and an operator signal (`stop`) sent from "Send a Signal" —
    its input encrypted through the codec endpoint, and applied."""
    async with ui_stack(settings, with_codec=True) as stack:
        campaign = await create_campaign(stack.api, CAMPAIGN)
        instance_id = await enrol(stack.api, campaign, lead(firstName="Philippa"))
        await wait_for_status(stack.api, campaign, instance_id, hasPendingApproval=True)
        workflow_id = handle_of(stack.client, campaign, instance_id).id

        # The list, filtered by our search attributes (README, "Finding instances").
        query = f"HasPendingApproval = true AND CampaignId = '{campaign.campaign_id}'"
        await asyncio.to_thread(
            browser.get,
            f"{stack.ui_url}/namespaces/default/workflows?query={urllib.parse.quote(query)}",
        )
        listed = await page_shows(browser, workflow_id)
        shot = screenshot(browser, "workflow-list.png", for_docs=listed)
        assert listed, f"the list never showed {workflow_id}; see {shot}"
        assert "HasPendingApproval" in browser.page_source

        # `make dev`'s link: the workflow id alone opens its latest run.
        await asyncio.to_thread(browser.get, workflow_ui_url(stack.ui_url, "default", workflow_id))
        run_url = await url_shows(browser, "/timeline")
        assert run_url, browser.current_url
        metadata_url = run_url.split("?")[0].rsplit("/", 1)[0] + "/user-metadata"
        await asyncio.to_thread(browser.get, metadata_url)
        summary = f"{CAMPAIGN['name']} · lead "
        shown = await text_appears(
            browser, summary, "Waiting for approval of step intro", SUBJECT, "Dear Philippa"
        )
        shot = screenshot(browser, "user-metadata.png", for_docs=shown)
        assert shown, f"the User Metadata tab never showed the details; see {shot}"

        # An operator signal from More Actions → Send a Signal.
        by_text(browser, "button", "More Actions").click()
        menu_item(browser, "Send a Signal").click()
        [select] = displayed(browser, "[data-testid=signal-select-button]")
        assert await enabled(select)
        select.click()
        signals = {item.text.strip() for item in displayed(browser, "li")}
        assert {"stop", "discard", "lead_replied", "lead_unsubscribed", "approve"} <= signals
        by_text(browser, "li", "stop").click()
        [editor] = displayed(browser, "dialog .cm-content")
        editor.click()
        editor.send_keys('{"reason": "wrong list", "decided_by": "ops@acme.example"}')
        [chosen] = displayed(browser, "[data-testid=signal-select-button]")
        chosen_name = chosen.find_element(By.TAG_NAME, "input").get_attribute("value")
        assert chosen_name == "stop" and "wrong list" in editor.text
        screenshot(browser, "send-a-signal.png", for_docs=True)
        requests_sent(browser)  # from here on, the log holds what Submit sends
        by_text(browser, "button", "Submit").click()

        await wait_for_status(
            stack.api,
            campaign,
            instance_id,
            workflowStatus="stopped",
            workflowStopReason="STOPPED_BY_OPERATOR",
        )
        # The UI encrypted the signal's input through our codec endpoint before sending it.
        encodes = [r for r in codec_requests(browser) if r["url"].split("?")[0].endswith("/encode")]
        assert encodes, "the UI sent the signal without encoding it"
        history = await handle_of(stack.client, campaign, instance_id).fetch_history()
        [signaled] = [
            event.workflow_execution_signaled_event_attributes
            for event in history.events
            if event.HasField("workflow_execution_signaled_event_attributes")
        ]
        assert signaled.signal_name == "stop"
        assert signaled.input.payloads[0].metadata["encoding"] == ENCODING

        await asyncio.to_thread(browser.get, metadata_url)
        stopped = await text_appears(browser, "Stopped", "ops@acme.example", within=60)
        shot = screenshot(browser, "stopped-by-operator.png", for_docs=stopped)
        assert stopped, f"the details never showed who stopped it; see {shot}"
