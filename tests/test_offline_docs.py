"""The API's interactive docs work offline: `/docs` (Swagger UI) and `/redoc` load their scripts
and styles from the installed `fastapi_offline` package, not a CDN.

A real headless Chromium with no network beyond 127.0.0.1 (`tests.helpers.browser.OFFLINE_FLAGS`)
opens both pages of a running API: each renders (Swagger UI its operation list, ReDoc its
operations), and Chromium's network log shows no request to any other host (but ReDoc's own
decorative logo, `REDOCLY_LOGO`). With FastAPI's
defaults (jsDelivr's Swagger UI and ReDoc) both pages stay blank and the log names the CDN.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.helpers import Api
from tests.helpers.browser import chromium, ensure_browser_installed, page_shows, requests_sent

pytestmark = pytest.mark.timeout(600)  # installing the browser on a fresh machine, in the test

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "devtools"}
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
"""The one request ReDoc's script makes beyond its page, whatever it is given: the small logo of
its sidebar's "API docs by Redocly" link (an `<img>` that removes itself when the logo does not
load; the page needs nothing from it)."""


@pytest.fixture
def offline_browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    ensure_browser_installed()
    with chromium(tmp_path / "chromium", offline=True) as browser:
        yield browser


def left_the_machine(browser: webdriver.Chrome) -> list[str]:
    """URLs of the requests the page sent anywhere but 127.0.0.1 (refused or not)."""
    return [
        request["url"]
        for request in requests_sent(browser)
        if urllib.parse.urlsplit(request["url"]).scheme not in LOCAL_SCHEMES
        and urllib.parse.urlsplit(request["url"]).hostname not in LOCAL_HOSTS
    ]


async def operations(api: Api) -> set[str]:
    """The operation ids of the API's OpenAPI document."""
    spec = (await api.http.get("/openapi.json")).json()
    return {
        operation["operationId"]
        for path in spec["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "operationId" in operation
    }


async def test_swagger_ui_renders_the_operation_list_without_network(
    api: Api, offline_browser: webdriver.Chrome
) -> None:
    # In a thread: the API answers on this event loop, and `get` waits for the page to load.
    await asyncio.to_thread(offline_browser.get, str(api.http.base_url.join("/docs")))
    rendered = await page_shows(offline_browser, 'class="opblock-summary', within=60)
    assert rendered, offline_browser.page_source[-2000:]
    shown = {
        element.get_attribute("id")
        for element in offline_browser.find_elements(By.CSS_SELECTOR, ".opblock[id]")
    }
    expected = await operations(api)
    # Swagger UI's element ids read `operations-<tag>-<operationId>`.
    assert {op for op in expected if any(str(id_).endswith(f"-{op}") for id_ in shown)} == (
        expected
    )
    assert left_the_machine(offline_browser) == []
    page = (await api.http.get("/docs")).text
    assert "/static-offline-docs/swagger-ui-bundle.js" in page and "cdn" not in page.lower()


async def test_redoc_renders_without_network(api: Api, offline_browser: webdriver.Chrome) -> None:
    await asyncio.to_thread(offline_browser.get, str(api.http.base_url.join("/redoc")))
    rendered = await page_shows(offline_browser, 'data-section-id="operation/', within=60)
    assert rendered, offline_browser.page_source[-2000:]
    shown = {
        str(element.get_attribute("data-section-id")).removeprefix("operation/")
        for element in offline_browser.find_elements(
            By.CSS_SELECTOR, '[data-section-id^="operation/"]'
        )
    }
    assert await operations(api) <= shown
    assert set(left_the_machine(offline_browser)) <= {REDOCLY_LOGO}
    page = (await api.http.get("/redoc")).text
    assert "/static-offline-docs/redoc.standalone.js" in page
    assert "fonts.googleapis.com" not in page and "cdn" not in page.lower()
