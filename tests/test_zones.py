"""Zone data ships with us and zone names are canonical (`campaign_engine/zones.py`).

- Without a system zone database (``PYTHONTZPATH`` at a directory with no zones: zoneinfo then
  finds nothing on the system and falls back to the `tzdata` package) the API and the worker
  start, take legacy zone names, and deliver in them.
- Every zone name accepted is stored and shown under its canonical IANA name, derived from the
  `tzdata` package's link lines; a name that cannot be loaded is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from temporalio.client import Client

from campaign_engine import zones
from campaign_engine.ids import new_object_id
from campaign_engine.keys import KeyRing, Permission, load_pepper
from campaign_engine.send_windows import InvalidWindow, parse_zone
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from entrypoints.devserver import free_port
from tests import services
from tests.helpers import Api, assert_eventually, create_campaign, handle_of, lead, outbox_files
from tests.helpers.campaigns import Campaign
from workflows.types import CampaignInput

CLI = str(Path(sys.executable).with_name("campaign-engine"))

LEGACY_NAMES = [
    ("Europe/Kiev", "Europe/Kyiv"),
    ("US/Central", "America/Chicago"),
    ("US/Eastern", "America/New_York"),
    ("US/Pacific", "America/Los_Angeles"),
    ("Asia/Calcutta", "Asia/Kolkata"),
    ("Asia/Saigon", "Asia/Ho_Chi_Minh"),
    ("Asia/Rangoon", "Asia/Yangon"),
    ("America/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ("America/Godthab", "America/Nuuk"),
    ("Pacific/Enderbury", "Pacific/Kanton"),
    ("Europe/Belfast", "Europe/London"),
    ("GB", "Europe/London"),
    ("Japan", "Asia/Tokyo"),
    ("UTC", "Etc/UTC"),
    ("Etc/Universal", "Etc/UTC"),
    ("Zulu", "Etc/UTC"),
    ("GMT", "Etc/GMT"),
    ("Etc/GMT0", "Etc/GMT"),
]
CANONICAL_NAMES = [
    "Etc/UTC",
    "Etc/GMT+5",
    "Etc/GMT-14",
    "America/New_York",
    "America/Argentina/Buenos_Aires",
    "Europe/Kyiv",
    # A country's own zone stays itself where IANA's data links it to a neighbour's: zone.tab.
    "Europe/Amsterdam",
    "Atlantic/Reykjavik",
    "Europe/Vaduz",
]

WINDOW = {
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "start": "00:00",
    "end": "24:00",
}


def one_step(**fields: Any) -> dict[str, Any]:
    """A one-step campaign with `fields` (camelCase) added."""
    return {"name": "Zones", "steps": [{"id": "intro", "subject": "Hi", "body": "Hi"}], **fields}


def _tzdata_lines(kind: str) -> list[list[str]]:
    text = (importlib.resources.files("tzdata") / "zoneinfo" / "tzdata.zi").read_text("utf-8")
    return [line.split() for line in text.splitlines() if line.startswith(f"{kind} ")]


# --- the names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "canonical"), LEGACY_NAMES)
def test_legacy_names_are_read_under_their_canonical_name(given: str, canonical: str) -> None:
    assert zones.canonical_zone_name(given) == canonical
    assert parse_zone(given, "lead.timeZone").key == canonical


@pytest.mark.parametrize("name", CANONICAL_NAMES)
def test_canonical_names_stay_as_they_are(name: str) -> None:
    assert parse_zone(name, "sendWindow.timeZone").key == name


def test_every_link_of_the_zone_data_maps_to_a_zone_with_the_same_clock() -> None:
    zone_names = {fields[1] for fields in _tzdata_lines("Z")}
    links = _tzdata_lines("L")
    assert len(links) > 200  # the table is derived from the data, not a hand list
    instants = [datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC)]
    for _, target, alias in links:
        canonical = parse_zone(alias, "sendWindow.timeZone").key
        assert canonical in zone_names or canonical == alias, (alias, canonical)
        assert canonical in {target, alias}, (alias, target, canonical)
        for instant in instants:
            assert instant.astimezone(ZoneInfo(canonical)).utcoffset() == (
                instant.astimezone(ZoneInfo(alias)).utcoffset()
            ), (alias, canonical)


def test_every_name_accepted_has_one_canonical_name() -> None:
    for name in zones.known_zone_names():
        canonical = parse_zone(name, "lead.timeZone").key
        assert parse_zone(canonical, "lead.timeZone").key == canonical, (name, canonical)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("america/chicago", "America/Chicago"), ("europe/kiev", "Europe/Kiev"), ("utc", "UTC")],
)
def test_names_are_case_sensitive_and_the_message_gives_the_case(
    name: str, suggestion: str
) -> None:
    with pytest.raises(InvalidWindow, match=repr(suggestion)) as caught:
        parse_zone(name, "lead.timeZone")
    assert caught.value.field == "lead.timeZone"


@pytest.mark.parametrize("name", ["Factory", "localtime", "posixrules", "right/UTC", "posix/UTC"])
def test_placeholders_and_copies_are_not_zones(name: str) -> None:
    with pytest.raises(InvalidWindow):
        parse_zone(name, "sendWindow.timeZone")


# --- at the API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "canonical"), [*LEGACY_NAMES[:4], ("Etc/UTC", "Etc/UTC")])
async def test_a_window_zone_is_stored_and_shown_canonical(
    api: Api, given: str, canonical: str
) -> None:
    campaign = await create_campaign(api, one_step(sendWindow={**WINDOW, "timeZone": given}))

    read = await api.http.get(campaign.url, headers=campaign.auth)

    assert read.json()["data"]["sendWindow"]["timeZone"] == canonical
    stored = await api.store.get_campaign(campaign.account_group_id, campaign.campaign_id)
    assert stored is not None and stored.definition["sendWindow"]["timeZone"] == canonical


async def test_a_window_zone_in_the_wrong_case_is_a_400_naming_the_field(api: Api) -> None:
    campaign = await create_campaign(api, one_step())

    response = await api.http.put(
        campaign.url,
        json=one_step(sendWindow={**WINDOW, "timeZone": "us/central"}),
        headers=campaign.auth,
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == "sendWindow.timeZone"
    assert "'US/Central'" in response.json()["error"]["message"]


async def started_input(temporal: Client, campaign: Campaign, instance_id: str) -> CampaignInput:
    """The input the instance's workflow started with, decoded as the worker reads it."""
    history = await handle_of(temporal, campaign, instance_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [decoded] = await temporal.data_converter.decode(started.input.payloads, [CampaignInput])
    assert isinstance(decoded, CampaignInput)
    return decoded


async def test_a_lead_zone_is_enrolled_canonical(api: Api, temporal: Client) -> None:
    campaign = await create_campaign(api, one_step(sendWindow={**WINDOW, "timeZone": "US/Central"}))

    response = await api.http.post(
        f"{campaign.url}/workflow-instances",
        json={"lead": lead(timeZone="Europe/Kiev")},
        headers=campaign.auth,
    )

    assert response.status_code == 201, response.text
    instance_id = response.json()["data"]["workflowInstanceId"]
    started = await started_input(temporal, campaign, instance_id)
    assert started.lead.time_zone == "Europe/Kyiv"
    assert started.campaign.send_window is not None
    assert started.campaign.send_window.time_zone == "America/Chicago"


async def test_a_campaign_stored_with_a_legacy_zone_reads_and_enrols_canonical(
    api: Api, temporal: Client
) -> None:
    """A definition stored before names were made canonical keeps its name as typed."""
    campaign = await create_campaign(api, one_step())
    await api.store.put_campaign(
        campaign.account_group_id,
        campaign.campaign_id,
        one_step(sendWindow={**WINDOW, "timeZone": "US/Central", "holidays": None}),
    )

    read = await api.http.get(campaign.url, headers=campaign.auth)
    enrolled = await api.http.post(
        f"{campaign.url}/workflow-instances", json={"lead": lead()}, headers=campaign.auth
    )

    assert read.status_code == 200, read.text
    assert read.json()["data"]["sendWindow"]["timeZone"] == "America/Chicago"
    assert enrolled.status_code == 201, enrolled.text
    started = await started_input(temporal, campaign, enrolled.json()["data"]["workflowInstanceId"])
    assert started.campaign.send_window is not None
    assert started.campaign.send_window.time_zone == "America/Chicago"


# --- a process without a system zone database ---------------------------------------------------


def _broken_zone_dir(tmp_path: Path) -> Path:
    """A zone directory with no zones but one that zoneinfo lists and cannot load: its file
    starts like a TZif file (what `available_timezones` checks) and is not one."""
    directory = tmp_path / "zoneinfo"
    (directory / "Test").mkdir(parents=True)
    (directory / "Test" / "Broken").write_bytes(b"TZif2" + b"\0" * 10)
    return directory


async def test_without_tzdata_or_system_zones_a_command_dies_at_import(tmp_path: Path) -> None:
    """The control of the test below: its environment really has no zone data of the system.
    With the `tzdata` package hidden too, a command dies as it did before the dependency."""
    stub = tmp_path / "stub" / "tzdata"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    process = await asyncio.create_subprocess_exec(
        CLI,
        "keys",
        "list",
        env={
            "PATH": "",
            "PYTHONTZPATH": str(_broken_zone_dir(tmp_path)),
            "PYTHONPATH": str(stub.parent),
            "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path / "var"),
        },
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()

    assert process.returncode != 0
    assert "No time zone found with key UTC" in err.decode(), err.decode()


async def test_without_system_zones_the_api_and_worker_start_and_deliver_in_legacy_zones(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    zone_dir = _broken_zone_dir(tmp_path)
    no_system_zones = {"PYTHONTZPATH": str(zone_dir)}
    settings = settings.model_copy(update={"api_port": free_port()})
    key = await KeyRing(store, load_pepper(settings)).issue(
        "zones", [account_group := new_object_id()], list(Permission)
    )
    campaign = Campaign(account_group, new_object_id(), key)
    base = f"http://127.0.0.1:{settings.api_port}"
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    keys = await asyncio.create_subprocess_exec(
        CLI,
        "keys",
        "list",
        env={**services.process_env(settings), **no_system_zones},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, keys_err = await keys.communicate()
    assert keys.returncode == 0, keys_err.decode()

    async with (
        services.cli_process(settings, "api", log=api_log, env=no_system_zones) as api_process,
        services.cli_process(settings, "worker", log=worker_log, env=no_system_zones) as worker,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        await services.wait_until_serving(api_process, base, api_log)
        await services.wait_for_output(worker, worker_log, "worker polling task queue")

        put = await http.put(
            campaign.url,
            json=one_step(sendWindow={**WINDOW, "timeZone": "US/Central"}),
            headers=campaign.auth,
        )
        broken_window = await http.put(
            campaign.url,
            json=one_step(sendWindow={**WINDOW, "timeZone": "Test/Broken"}),
            headers=campaign.auth,
        )
        broken_lead = await http.post(
            f"{campaign.url}/workflow-instances",
            json={"lead": lead(timeZone="Test/Broken")},
            headers=campaign.auth,
        )
        enrolled = await http.post(
            f"{campaign.url}/workflow-instances",
            json={"lead": lead(timeZone="Europe/Kiev")},
            headers=campaign.auth,
        )
        assert put.status_code == 201, put.text
        assert put.json()["data"]["sendWindow"]["timeZone"] == "America/Chicago"
        assert broken_window.status_code == 400, broken_window.text
        assert broken_window.json()["error"]["details"] == "sendWindow.timeZone"
        assert broken_lead.status_code == 400, broken_lead.text
        assert broken_lead.json()["error"]["details"] == "lead.timeZone"
        assert enrolled.status_code == 201, enrolled.text
        instance_id = enrolled.json()["data"]["workflowInstanceId"]
        instance_url = campaign.instance_url(instance_id)

        async def status() -> dict[str, Any]:
            got = await http.get(instance_url, headers=campaign.auth)
            return dict(got.json()["data"]["leadStatus"]) if got.status_code == 200 else {}

        await assert_eventually(status, lambda seen: seen.get("hasPendingApproval") is True)
        approved = await http.post(f"{instance_url}/approve", headers=campaign.auth)
        assert approved.status_code == 200, approved.text
        await assert_eventually(
            status, lambda seen: seen.get("workflowStatus") == "completed", within=30
        )

    [delivered] = outbox_files(settings)
    assert delivered.name.endswith(f"{instance_id}.intro.eml")
    for log in (api_log, worker_log):
        assert "ZoneInfoNotFoundError" not in services.output_of(log)
