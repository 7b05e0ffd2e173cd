"""Every HTTP example of the documentation runs against the real stack and gets the answer its
page shows (issue 22, part 3): a changed API breaks this test before it breaks a reader.

The pages: every `.md` under `docs/`, the README, and this runner's own page
(`tests/docs_examples_fixture/*.md`, always there, so the runner is exercised even before the
site has a page). The format they follow is `tests/docs_examples.py`'s docstring. One stack for
the module (the session's Temporal dev server, a worker delivering into a file outbox, the API
behind a recording proxy; mailbox `sales@acme.example`, daily cap 50, open to every account
group); each page gets a fresh account group and a key with every permission there, so pages
never see each other's campaigns. `DOCS_EXAMPLES_ROOT=/path/to/checkout` runs that checkout's
`docs/` and README instead (e.g. a branch's pages before it is merged). The pages under
`tests/docs_examples_fixture/broken/` are wrong on purpose: each must fail, naming what its
`<!-- must fail: … -->` comments say.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client

from campaign_engine.ids import new_object_id
from campaign_engine.settings import MailboxLimits, Settings
from campaign_engine.store import Store
from entrypoints.devserver import DevServer, free_port
from tests.docs_examples import (
    ExampleFailure,
    RecordingProxy,
    differences,
    parse_page,
    run_page,
)
from tests.helpers import Api, running_api
from tests.keys import TEST_PAYLOAD_KEYS
from worker import build_worker

ROOT = Path(os.environ.get("DOCS_EXAMPLES_ROOT") or Path(__file__).resolve().parent.parent)
"""Where `docs/` and `README.md` are read: this checkout, or another one named by
`DOCS_EXAMPLES_ROOT` (to try a branch's pages before merging it)."""
FIXTURE = Path(__file__).resolve().parent / "docs_examples_fixture"


def _pages() -> list[Path]:
    """The runner's own pages, then every page of the site, then the README, in a stable order."""
    site = sorted((ROOT / "docs").rglob("*.md")) if (ROOT / "docs").is_dir() else []
    return [*sorted(FIXTURE.glob("*.md")), *site, ROOT / "README.md"]


def _name(path: Path) -> str:
    """How messages and test ids name a page: its path in the checkout."""
    base = ROOT if path.is_relative_to(ROOT) else FIXTURE.parent.parent
    return path.relative_to(base).as_posix()


PAGES = _pages()
BROKEN = sorted((FIXTURE / "broken").glob("*.md"))
MAILBOX = "sales@acme.example"
"""A sending mailbox any account group may name as `from`, with a daily cap of 50: what the
how-to on sending windows starts `make dev` with."""


@dataclass
class Stack:
    """The module's running stack: the API, the proxy the examples call as `$API`, its settings."""

    api: Api
    proxy: RecordingProxy
    settings: Settings


@pytest.fixture(scope="module")
async def stack(
    temporal_server: DevServer, temporal: Client, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """Module scope: a worker (file outbox) and the API on their own task queue, behind a
    recording proxy; started once for every page."""
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("docs-examples") / "var",
        temporal_address=temporal_server.address,
        task_queue=f"tq-docs-{uuid.uuid4()}",
        # The machine is shared: a query answered late is a 502 in a page, not a slow one.
        temporal_rpc_timeout_seconds=10.0,
        api_port=free_port(),
        rate_limit="1000/minute",
        api_metrics_port=0,
        worker_metrics_port=0,
        payload_keys=TEST_PAYLOAD_KEYS,
        mailboxes={MAILBOX: MailboxLimits(account_groups="*", daily_cap=50)},
    )
    store = await Store.open(settings.resolved_database_url)
    try:
        async with build_worker(temporal, settings, store), running_api(settings, temporal) as api:
            proxy = RecordingProxy(str(api.http.base_url).rstrip("/"))
            async with proxy.serving():
                yield Stack(api, proxy, settings)
    finally:
        await store.close()


async def _run(stack: Stack, path: Path, workdir: Path, block_timeout: float = 30.0) -> int:
    """Runs one page with a fresh account group and a key with every permission there."""
    account_group = new_object_id()
    issued = await stack.api.issue_key([account_group], name=f"docs examples {_name(path)}")
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    page = parse_page(_name(path), text)
    return await run_page(
        page,
        stack.proxy,
        key=issued.key,
        account_group=account_group,
        workdir=workdir,
        block_timeout=block_timeout,
    )


@pytest.mark.parametrize("path", PAGES, ids=_name)
async def test_page_examples_answer_as_shown(path: Path, stack: Stack, tmp_path: Path) -> None:
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    page = parse_page(_name(path), text)
    assert not page.problems, "\n".join(page.problems)
    ran = await _run(stack, path, tmp_path)
    assert ran == len(page.examples)


def test_the_fixture_page_covers_the_format() -> None:
    """The runner's own page has bash and Python examples, assignments used by later blocks,
    a wait loop and an error answer; a change that stopped collecting any of them shows here."""
    page = parse_page("first-campaign.md", (FIXTURE / "first-campaign.md").read_text())
    assert not page.problems
    assert [example.kind for example in page.examples].count("python") == 1
    statuses = [example.expected and example.expected.status for example in page.examples]
    assert statuses == [None, 201, 201, 200, 200, 200, 200, 409, 200]
    assert any("until curl" in example.block.text for example in page.examples)


@pytest.mark.parametrize("path", BROKEN, ids=lambda path: path.name)
async def test_a_wrong_page_fails_naming_page_and_line(
    path: Path, stack: Stack, tmp_path: Path
) -> None:
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    must_say = re.findall(r"<!-- must fail: (.+?) -->", text)
    assert must_say, f"{path.name} says nothing about how it must fail"
    with pytest.raises(ExampleFailure) as failed:
        await _run(stack, path, tmp_path, block_timeout=3.0)
    for expected in must_say:
        assert expected in str(failed.value), str(failed.value)


@pytest.mark.parametrize(
    ("shown", "actual", "problems"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, []),
        ({"a": "…"}, {"a": None}, []),
        ({"a": "9f…"}, {"a": "0e12"}, []),
        ({"a": "…"}, {}, ['a: missing (expected "…")']),
        ({"a": True}, {"a": 1}, ["a: expected true, got 1"]),
        ({"a": 1}, {"a": 1.0}, []),
        ({"a": [1, 2]}, {"a": [1]}, ["a: expected 2 items, got 1: [1]"]),
        ({"a": [{"b": 1}]}, {"a": [{"b": 2, "c": 3}]}, ["a[0].b: expected 1, got 2"]),
        ({"a": {"b": None}}, {"a": {"b": "x"}}, ['a.b: expected null, got "x"']),
        ({"a": {}}, {"a": []}, ["a: expected an object, got []"]),
    ],
)
def test_differences(shown: object, actual: object, problems: list[str]) -> None:
    assert differences(shown, actual) == problems
