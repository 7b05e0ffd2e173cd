"""What you PUT is what you GET: durations are ISO 8601 of a fixed length (`api/durations.py`),
and a campaign read back and PUT again changes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.durations import format_duration, parse_duration, suggestion
from tests.helpers import Api, create_campaign

ACCEPTED = [
    ("P1D", timedelta(days=1), "P1D"),
    ("PT1M", timedelta(minutes=1), "PT1M"),
    ("PT90S", timedelta(seconds=90), "PT1M30S"),
    ("PT24H", timedelta(days=1), "P1D"),
    ("P1W", timedelta(days=7), "P7D"),
    ("P365D", timedelta(days=365), "P365D"),
    ("PT0S", timedelta(0), "PT0S"),
    ("P0D", timedelta(0), "PT0S"),
    ("PT0.5S", timedelta(seconds=0.5), "PT0.5S"),
    ("PT0,5S", timedelta(seconds=0.5), "PT0.5S"),
    ("P1.5D", timedelta(days=1, hours=12), "P1DT12H"),
    ("P1DT12H30M", timedelta(days=1, hours=12, minutes=30), "P1DT12H30M"),
    (60, timedelta(minutes=1), "PT1M"),
    (0.25, timedelta(seconds=0.25), "PT0.25S"),
]
REFUSED = [
    ("P1M", "calendar"),
    ("P1Y", "calendar"),
    ("P1Y2M", "calendar"),
    ("1 day", "PT1M"),
    ("1m", "PT1M"),
    ("1d", "PT1M"),
    ("60", "PT1M"),
    ("01:00:00", "PT1M"),
    ("p1d", "'P1D'"),
    ("pt1m", "'PT1M'"),
    ("-P1D", "no sign"),
    ("+P1D", "no sign"),
    ("P", "PT1M"),
    ("PT", "PT1M"),
    ("P1DT", "PT1M"),
    (" P1D", "whitespace"),
    ("P1.5DT1H", "last component"),
    ("PT0.0000001S", "microsecond"),
    ("P1W2D", "PT1M"),
    ("P\u0661D", "PT1M"),  # an Arabic-Indic digit one: ISO 8601 digits are 0-9
    (True, "boolean"),
    (-1, "negative"),
    (float("nan"), "PT1M"),
]


# What a refusal suggests: the likely intended value, for the near-misses people write.
SUGGESTED = [
    # the issue's own: "1m" is a minute
    ("1m", "PT1M"),
    # units as people write them
    ("5 minutes", "PT5M"),
    ("1 min", "PT1M"),
    ("1h", "PT1H"),
    ("2 hrs", "PT2H"),
    ("1.5h", "PT1H30M"),
    ("1h30m", "PT1H30M"),
    ("1h 30m", "PT1H30M"),
    ("1 hour and 30 minutes", "PT1H30M"),
    ("an hour", "PT1H"),
    ("2d", "P2D"),
    ("1 day", "P1D"),
    ("1d12h", "P1DT12H"),
    ("24h", "P1D"),
    ("90s", "PT1M30S"),
    ("500ms", "PT0.5S"),
    ("1w", "P7D"),
    ("2 weeks", "P14D"),
    ("2 months", "P60D"),
    ("1M", "P30D"),
    # a clock, a number in a string
    ("01:00:00", "PT1H"),
    ("1:30", "PT1H30M"),
    ("00:00:45", "PT45S"),
    ("60", "PT1M"),
    ("1.5", "PT1.5S"),
    # ISO 8601 near-misses
    ("PT1m", "PT1M"),
    ("p1d", "P1D"),
    ("P1H", "PT1H"),
    ("P30S", "PT30S"),
    ("P1D2H", "P1DT2H"),
    ("PT1D", "P1D"),
    ("PT1D2H", "P1DT2H"),
    ("T1M", "PT1M"),
    ("1DT2H", "P1DT2H"),
    ("P2W3D", "P17D"),
    ("PT1H30", "PT1H30M"),
    ("PT1M30", "PT1M30S"),
    ("PT1H 30M", "PT1H30M"),
    ("P1DT", "P1D"),
    (" P1D", "P1D"),
    # not a string at all
    ({"minutes": 5}, "PT5M"),
    ({"hours": 1, "minutes": 30}, "PT1H30M"),
]
NOTHING_TO_SUGGEST = [
    "PT1M",  # accepted as it is
    "soon",
    "PTM",
    "P",
    "3 fortnights",
    "-P1D",  # a sign is its own mistake, said as such
    True,
    None,
    {"foo": 1},
    [1],
]


@pytest.mark.parametrize(("given", "meant"), SUGGESTED)
def test_a_refused_duration_suggests_what_was_probably_meant(given: object, meant: str) -> None:
    assert suggestion(given) == meant
    with pytest.raises(ValueError) as refused:
        parse_duration(given)
    message = str(refused.value)
    assert repr(meant) in message
    assert "PT1M" in message  # and the accepted form, always
    assert parse_duration(meant) > timedelta(0)


@pytest.mark.parametrize("given", NOTHING_TO_SUGGEST)
def test_no_suggestion_where_nothing_reads_as_a_duration(given: object) -> None:
    assert suggestion(given) is None


@pytest.mark.parametrize(
    ("given", "readings"),
    [
        ("P1M", ["'PT1M' (1 minute", "'P30D' (counting a month as 30 days)"]),
        ("P2M", ["'PT2M' (2 minutes", "'P60D'"]),
        ("P1Y", ["'P365D' (counting a year as 365 days)"]),
        ("P1Y2M", ["'P425D'"]),
        ("P1MT2H", ["'P30DT2H'"]),
    ],
)
def test_calendar_units_are_offered_both_readings(given: str, readings: list[str]) -> None:
    """`P1M` is a month in ISO 8601, and often a minute whose `T` was forgotten: both are said."""
    with pytest.raises(ValueError, match="calendar") as refused:
        parse_duration(given)
    for reading in readings:
        assert reading in str(refused.value)
    if given != "P1M" and given != "P2M":
        assert "minutes come after the T" not in str(refused.value)


@pytest.mark.parametrize(("given", "duration", "shown"), ACCEPTED)
def test_accepted_durations_mean_what_was_written(
    given: object, duration: timedelta, shown: str
) -> None:
    assert parse_duration(given) == duration
    assert format_duration(duration) == shown
    assert parse_duration(shown) == duration


@pytest.mark.parametrize(("given", "said"), REFUSED)
def test_refused_durations_say_why_and_show_the_accepted_form(given: object, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_duration(given)


@given(st.integers(min_value=0, max_value=400 * 86_400 * 1_000_000))
def test_what_is_shown_reads_back_the_same(microseconds: int) -> None:
    duration = timedelta(microseconds=microseconds)
    shown = format_duration(duration)
    assert "Y" not in shown and "W" not in shown
    assert parse_duration(shown) == duration


# --- at the API ---------------------------------------------------------------------------------


def campaign_with(delay: object = "PT0S", **fields: Any) -> dict[str, Any]:
    """A one-step campaign with this step delay and `fields` (camelCase)."""
    return {
        "name": "Durations",
        "steps": [{"id": "intro", "subject": "Hi", "body": "Hi", "delay": delay}],
        **fields,
    }


@pytest.mark.parametrize(
    ("field", "value", "details"),
    [
        ("delay", "P1M", "steps.0.delay"),
        ("delay", "1 day", "steps.0.delay"),
        ("delay", "1m", "steps.0.delay"),
        ("delay", "-P1D", "steps.0.delay"),
        ("approvalTimeout", "P1Y", "approvalTimeout"),
        ("approvalTimeout", "p7d", "approvalTimeout"),
        ("outOfOfficeHold", "P1M", "outOfOfficeHold"),
        ("approvalReminder", ["PT1H", "1 hour"], "approvalReminder"),
    ],
)
async def test_a_duration_that_is_not_iso_8601_of_a_fixed_length_is_a_400_naming_it(
    api: Api, field: str, value: object, details: str
) -> None:
    campaign = await create_campaign(api, campaign_with())
    body = (
        campaign_with(value)
        if field == "delay"
        else campaign_with(**{field: value, "approvalTimeout": "P7D"})
        if field == "approvalReminder"
        else campaign_with(**{field: value})
    )

    response = await api.http.put(campaign.url, json=body, headers=campaign.auth)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == details
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert response.json()["error"]["message"].startswith(details + ": ")
    if value in ("1m", "1 day"):
        assert "PT1M" in response.json()["error"]["message"]
    read = await api.http.get(campaign.url, headers=campaign.auth)
    assert read.json()["data"]["steps"][0]["delay"] == "PT0S"  # nothing was stored


@pytest.mark.parametrize(
    ("field", "value", "meant"),
    [
        ("delay", "1m", "PT1M"),
        ("delay", "5 minutes", "PT5M"),
        ("delay", "2d", "P2D"),
        ("delay", "PT1m", "PT1M"),
        ("delay", "P1H", "PT1H"),
        ("delay", "60", "PT1M"),
        ("approvalTimeout", "7 days", "P7D"),
        ("approvalTimeout", "P1M", "PT1M"),
        ("outOfOfficeHold", "2 weeks", "P14D"),
        ("approvalReminder", "1h", "PT1H"),
        ("approvalReminder", ["PT1H", "1d"], "P1D"),
    ],
)
async def test_a_duration_error_names_the_field_and_what_was_probably_meant(
    api: Api, field: str, value: object, meant: str
) -> None:
    """The issue's `"delay": "1m"`: a 400 VALIDATION_ERROR naming the field, the likely value
    and the accepted form — and the suggested value is accepted by the same PUT."""
    campaign = await create_campaign(api, campaign_with())
    extra = {"approvalTimeout": "P7D"} if field == "approvalReminder" else {}

    def body(duration: object) -> dict[str, Any]:
        if field == "delay":
            return campaign_with(duration)
        return campaign_with(**{**extra, field: duration})

    response = await api.http.put(campaign.url, json=body(value), headers=campaign.auth)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    named = "steps.0.delay" if field == "delay" else field
    assert error["details"] == named
    assert error["message"].startswith(f"{named}: ")
    assert repr(meant) in error["message"]
    assert "ISO 8601" in error["message"]
    assert "Input should be" not in error["message"]  # pydantic's own words never reach it
    fixed = [*value[:-1], meant] if isinstance(value, list) else meant
    accepted = await api.http.put(campaign.url, json=body(fixed), headers=campaign.auth)
    assert accepted.status_code == 200, accepted.text


async def test_durations_read_back_with_the_same_length(api: Api) -> None:
    body = campaign_with(
        "P1W", approvalTimeout="P365D", approvalReminder=["PT90S", 3600], outOfOfficeHold="PT24H"
    )
    campaign = await create_campaign(api, body)

    data = (await api.http.get(campaign.url, headers=campaign.auth)).json()["data"]

    assert data["steps"][0]["delay"] == "P7D"
    assert data["approvalTimeout"] == "P365D"  # not "P1Y", which a PUT would refuse
    assert data["approvalReminder"] == ["PT1M30S", "PT1H"]
    assert data["outOfOfficeHold"] == "P1D"


async def test_a_campaign_stored_with_old_duration_forms_still_reads(api: Api) -> None:
    """Definitions stored before: pydantic wrote 365 days as "P1Y" and read "P1M" as 30 days."""
    campaign = await create_campaign(api, campaign_with())
    await api.store.put_campaign(
        campaign.account_group_id,
        campaign.campaign_id,
        campaign_with("P30D", approvalTimeout="P1Y"),
    )

    read = await api.http.get(campaign.url, headers=campaign.auth)

    assert read.status_code == 200, read.text
    assert read.json()["data"]["steps"][0]["delay"] == "P30D"
    assert read.json()["data"]["approvalTimeout"] == "P365D"


# --- the property: PUT, GET, PUT the GET: nothing changes ---------------------------------------

_DURATION_STRINGS = st.one_of(
    st.builds(
        lambda d, h, m, s: format_duration(timedelta(days=d, hours=h, minutes=m, seconds=s)),
        st.integers(0, 30),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
    ),
    st.sampled_from(["P1W", "PT24H", "PT90S", "P1.5D", "PT0,5S", "P0D", "PT0S", "P2W"]),
    st.integers(0, 86_400 * 30),
)
_ZONES = st.sampled_from(
    ["US/Central", "Europe/Kiev", "UTC", "Etc/GMT+5", "Europe/Amsterdam", "Asia/Calcutta", "GB"]
)
_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABCDÉ", min_size=1, max_size=20).filter(
    str.strip
)


@st.composite
def campaigns(draw: st.DrawFn) -> dict[str, Any]:
    """Campaign bodies over every field a PUT takes but the webhook (its secret is write-only)."""
    ids = draw(
        st.lists(
            st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True), min_size=1, max_size=3, unique=True
        )
    )
    steps: list[dict[str, Any]] = []
    for index, step_id in enumerate(ids):
        step: dict[str, Any] = {"id": step_id, "body": draw(_TEXT)}
        if index and draw(st.booleans()):
            step["thread"] = True
        else:
            step["subject"] = draw(_TEXT)
        step["requiresApproval"] = draw(st.booleans())
        if draw(st.booleans()):
            step["businessDays"] = draw(st.integers(1, 10))
        elif draw(st.booleans()):
            step["delay"] = draw(_DURATION_STRINGS)
        steps.append(step)
    body: dict[str, Any] = {"name": draw(_TEXT), "steps": steps}
    if draw(st.booleans()):
        body["approvalTimeout"] = "P7D"
        if draw(st.booleans()):
            body["approvalReminder"] = draw(st.sampled_from(["PT1H", ["P1D", 7200], "P6DT23H"]))
    if draw(st.booleans()):
        body["sendWindow"] = {
            "timeZone": draw(_ZONES),
            "days": draw(
                st.lists(
                    st.sampled_from(["mon", "wed", "sat"]), min_size=1, max_size=3, unique=True
                )
            ),
            "start": "08:00",
            "end": draw(st.sampled_from(["17:30", "24:00"])),
            "holidays": draw(st.sampled_from([None, "US", "DE-BY"])),
        }
    if draw(st.booleans()):
        body["from"] = draw(st.sampled_from(["campaigns@localhost", "Ada <campaigns@localhost>"]))
    body["stopOnReply"] = draw(st.sampled_from(["lead", "domain"]))
    if draw(st.booleans()):
        body["outOfOfficeHold"] = draw(st.sampled_from(["PT1H", "P14D", "P60D", 86_400]))
    return body


SERVER_OWNED = {"updatedAt"}


async def test_any_accepted_put_read_back_and_put_again_changes_nothing(api: Api) -> None:
    campaign = await create_campaign(api, campaign_with())
    seen: list[dict[str, Any]] = []

    # Hypothesis draws the bodies (synchronously); each goes through the real API below.
    @settings(max_examples=40, deadline=None, database=None, derandomize=True)
    @given(campaigns())
    def collect(body: dict[str, Any]) -> None:
        seen.append(body)

    collect()
    assert len(seen) >= 20
    accepted = 0
    for body in seen:
        first = await api.http.put(campaign.url, json=body, headers=campaign.auth)
        assert first.status_code in (200, 400), first.text
        if first.status_code == 400:
            continue
        accepted += 1
        read = (await api.http.get(campaign.url, headers=campaign.auth)).json()["data"]
        # The meaning is what was written: every duration the same length, names canonical.
        for put_step, read_step in zip(body["steps"], read["steps"], strict=True):
            assert parse_duration(read_step["delay"]) == parse_duration(put_step.get("delay", 0))
            assert read_step["body"] == put_step["body"]
        for field in ("approvalTimeout", "outOfOfficeHold"):
            if field in body:
                assert parse_duration(read[field]) == parse_duration(body[field])
        again = await api.http.put(campaign.url, json=read, headers=campaign.auth)
        assert again.status_code == 200, (body, again.text)
        reread = (await api.http.get(campaign.url, headers=campaign.auth)).json()["data"]
        changed = {key for key in read.keys() | reread.keys() if read.get(key) != reread.get(key)}
        assert changed <= SERVER_OWNED, (body, read, reread)
    assert accepted >= len(seen) // 2, "the bodies drawn are meant to be mostly valid"


# --- the send window's times: "HH:MM", with the likely one when refused -------------------------


@pytest.mark.parametrize(
    ("field", "value", "meant"),
    [
        ("start", "9:00", "09:00"),
        ("start", "9am", "09:00"),
        ("start", "9:30 AM", "09:30"),
        ("end", "5pm", "17:00"),
        ("end", "5 p.m.", "17:00"),
        ("end", "17:00:00", "17:00"),
        ("end", "1700", "17:00"),
        ("start", "9h30", "09:30"),
        ("start", "12am", "00:00"),
        ("start", "noon", None),
        ("start", "24:00", None),  # an end of day, never a start
        ("end", "25:00", None),
    ],
)
async def test_a_send_window_time_names_the_field_and_the_likely_time(
    api: Api, field: str, value: str, meant: str | None
) -> None:
    campaign = await create_campaign(api, campaign_with())
    window = {"days": ["mon", "tue"], "start": "08:00", "end": "18:00", field: value}

    response = await api.http.put(
        campaign.url, json=campaign_with(sendWindow=window), headers=campaign.auth
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"] == f"sendWindow.{field}"
    assert '"HH:MM"' in error["message"]
    if meant is None:
        assert "did you mean" not in error["message"]
    else:
        assert f"did you mean {meant!r}?" in error["message"]
        fixed = {**window, field: meant}
        accepted = await api.http.put(
            campaign.url, json=campaign_with(sendWindow=fixed), headers=campaign.auth
        )
        assert accepted.status_code == 200, accepted.text
