"""The sending calendar (`campaign_engine/send_windows.py`): pure unit tests, no server.

Zone facts used below (IANA data): New York skips 02:00-03:00 on 2026-03-08 (07:00 UTC) and
repeats 01:00-02:00 on 2026-11-01 (05:00-06:00 UTC EDT, 06:00-07:00 UTC EST); Berlin skips
02:00-03:00 on 2026-03-29 (01:00 UTC) and repeats 02:00-03:00 on 2026-10-25 (00:00-01:00 UTC CEST,
01:00-02:00 UTC CET). US Thanksgiving 2026 is Thursday 2026-11-26.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice, pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign_engine import send_windows
from campaign_engine.send_windows import (
    WEEKDAYS,
    InvalidWindow,
    SendWindow,
    business_days_later,
    is_open,
    local_iso,
    next_open,
    open_intervals,
    parse_window,
    parse_zone,
)
from campaign_engine.zones import known_zone_names

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
ALL_DAYS = list(WEEKDAYS)
WEEKDAYS_ONLY = ["mon", "tue", "wed", "thu", "fri"]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(
    start: str,
    end: str,
    *,
    zone: str | None = "America/New_York",
    days: list[str] | None = None,
    holidays: str | None = None,
) -> SendWindow:
    return parse_window(
        time_zone=zone,
        days=ALL_DAYS if days is None else days,
        start=start,
        end=end,
        holidays=holidays,
    )


def first(
    w: SendWindow | None, after: datetime, n: int = 1, **kw: Any
) -> list[tuple[datetime, datetime]]:
    return list(islice(open_intervals(w, after, **kw), n))


# --- parsing ---------------------------------------------------------------------------------


def test_parse_window_builds_the_window() -> None:
    w = parse_window(
        time_zone="Europe/Berlin", days=["fri", "mon"], start="09:00", end="17:30", holidays="DE"
    )
    assert w == SendWindow(
        time_zone=BERLIN,
        days=frozenset({0, 4}),
        start=time(9, 0),
        end=time(17, 30),
        holidays="DE",
    )


def test_no_zone_is_utc_and_24_00_is_end_of_day() -> None:
    w = parse_window(time_zone=None, days=["mon"], start="00:00", end="24:00")
    assert w.time_zone == ZoneInfo("Etc/UTC")  # UTC's canonical name
    assert w.end is None
    assert w.holidays is None


def test_lead_zone_wins() -> None:
    w = parse_window(
        time_zone="Europe/Berlin",
        days=ALL_DAYS,
        start="09:00",
        end="17:00",
        lead_time_zone="America/New_York",
    )
    assert w.time_zone == NY
    # 09:00 in New York (EST) is 14:00 UTC, not Berlin's 08:00 UTC.
    assert next_open(w, utc(2026, 12, 1, 6, 0)) == utc(2026, 12, 1, 14, 0)


def test_lead_zone_also_wins_over_no_zone() -> None:
    w = parse_window(
        time_zone=None, days=ALL_DAYS, start="09:00", end="17:00", lead_time_zone="Asia/Kolkata"
    )
    assert w.time_zone == ZoneInfo("Asia/Kolkata")
    assert next_open(w, utc(2026, 12, 1, 0, 0)) == utc(2026, 12, 1, 3, 30)


@pytest.mark.parametrize(
    "name", ["Etc/UTC", "America/New_York", "Etc/GMT+5", "America/Argentina/Buenos_Aires"]
)
def test_parse_zone_accepts_iana_names(name: str) -> None:
    assert parse_zone(name, "sendWindow.timeZone").key == name


BAD_ZONES = [
    "Mars/Olympus",
    "../etc/passwd",
    "",
    "America/New_York ",
    " America/New_York",
    "localtime",
    "posixrules",
    "/usr/share/zoneinfo/UTC",
    "/etc/localtime",
    "America",
    "America/../Europe/Berlin",
    "posix/America/New_York",
    "right/UTC",
    "zone.tab",
    "tzdata.zi",
    "america/new_york",
    "America/New_York\x00",
    "UTC\n",
]


@pytest.mark.parametrize("name", BAD_ZONES)
def test_bad_zone_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidWindow) as caught:
        parse_zone(name, "sendWindow.timeZone")
    assert caught.value.field == "sendWindow.timeZone"
    assert str(caught.value)


@pytest.mark.parametrize("name", BAD_ZONES)
def test_bad_zone_in_a_window_names_its_field(name: str) -> None:
    with pytest.raises(InvalidWindow) as window_zone:
        parse_window(time_zone=name, days=["mon"], start="09:00", end="17:00")
    assert window_zone.value.field == "sendWindow.timeZone"
    with pytest.raises(InvalidWindow) as lead_zone:
        parse_window(time_zone="UTC", days=["mon"], start="09:00", end="17:00", lead_time_zone=name)
    assert lead_zone.value.field == "lead.timeZone"


def test_zone_messages_say_what_is_wrong() -> None:
    with pytest.raises(InvalidWindow, match="whitespace"):
        parse_zone("America/New_York ", "lead.timeZone")
    with pytest.raises(InvalidWindow, match="not a known IANA"):
        parse_zone("Mars/Olympus", "lead.timeZone")
    with pytest.raises(InvalidWindow, match="no paths"):
        parse_zone("../etc/passwd", "lead.timeZone")


def test_invalid_window_is_a_value_error_with_field() -> None:
    error = InvalidWindow("sendWindow.days", "nope")
    assert isinstance(error, ValueError)
    assert (error.field, str(error)) == ("sendWindow.days", "nope")


@pytest.mark.parametrize(
    "days",
    [[], ["monday"], ["mon", "mon"], ["Mon"], ["MON"], ["mon", "xyz"], [" mon"], [1]],
)
def test_bad_days_are_refused(days: list[Any]) -> None:
    with pytest.raises(InvalidWindow) as caught:
        parse_window(time_zone="UTC", days=days, start="09:00", end="17:00")
    assert caught.value.field == "sendWindow.days"


def test_duplicate_day_message() -> None:
    with pytest.raises(InvalidWindow, match="twice"):
        parse_window(time_zone="UTC", days=["tue", "mon", "tue"], start="09:00", end="17:00")


BAD_TIMES = [
    "9:00",
    "09:60",
    "25:00",
    "09:00:00",
    "0900",
    "09:0",
    " 09:00",
    "09:00\n",
    "\u0660\u0669:00",
    "",
]


@pytest.mark.parametrize("start", [*BAD_TIMES, "24:00"])
def test_bad_start_is_refused(start: str) -> None:
    with pytest.raises(InvalidWindow) as caught:
        parse_window(time_zone="UTC", days=["mon"], start=start, end="24:00")
    assert caught.value.field == "sendWindow.start"


@pytest.mark.parametrize("end", [*BAD_TIMES, "24:01", "24:30"])
def test_bad_end_is_refused(end: str) -> None:
    with pytest.raises(InvalidWindow) as caught:
        parse_window(time_zone="UTC", days=["mon"], start="00:00", end=end)
    assert caught.value.field == "sendWindow.end"


@pytest.mark.parametrize(
    ("start", "end"), [("17:00", "09:00"), ("09:00", "09:00"), ("22:00", "06:00")]
)
def test_end_must_be_after_start_no_overnight(start: str, end: str) -> None:
    with pytest.raises(InvalidWindow, match="overnight") as caught:
        parse_window(time_zone="UTC", days=["mon"], start=start, end=end)
    assert caught.value.field == "sendWindow.end"


@pytest.mark.parametrize("code", ["US", "US-NY", "DE", "DE-BY", "GB-SCT"])
def test_known_holiday_calendars(code: str) -> None:
    assert window("09:00", "17:00", holidays=code).holidays == code


@pytest.mark.parametrize(
    "code", ["XX", "US-ZZ", "us", "USA", "US-", "US-NY-X", "", "US NY", "de-by"]
)
def test_unknown_holiday_calendars_are_refused(code: str) -> None:
    with pytest.raises(InvalidWindow) as caught:
        window("09:00", "17:00", holidays=code)
    assert caught.value.field == "sendWindow.holidays"


def test_fields_are_checked_in_order() -> None:
    with pytest.raises(InvalidWindow) as caught:
        parse_window(
            time_zone="Mars/Olympus",
            days=[],
            start="9",
            end="x",
            holidays="XX",
            lead_time_zone="nope",
        )
    assert caught.value.field == "sendWindow.timeZone"


# --- intervals: ordinary days ----------------------------------------------------------------


def test_weekend_is_skipped_friday_after_hours_to_monday_morning() -> None:
    w = window("09:00", "17:00", days=WEEKDAYS_ONLY)
    friday_1730 = datetime(2026, 12, 4, 17, 30, tzinfo=NY)
    monday_0900 = datetime(2026, 12, 7, 9, 0, tzinfo=NY)
    assert not is_open(w, friday_1730)
    assert next_open(w, friday_1730) == monday_0900
    assert first(w, friday_1730) == [(monday_0900, datetime(2026, 12, 7, 17, 0, tzinfo=NY))]


def test_first_interval_is_clipped_to_after_and_earlier_ones_skipped() -> None:
    w = window("09:00", "17:00", days=WEEKDAYS_ONLY)
    at = datetime(2026, 12, 1, 12, 34, 56, tzinfo=NY)
    assert first(w, at, 2) == [
        (at.astimezone(UTC), datetime(2026, 12, 1, 17, 0, tzinfo=NY)),
        (datetime(2026, 12, 2, 9, 0, tzinfo=NY), datetime(2026, 12, 2, 17, 0, tzinfo=NY)),
    ]
    assert is_open(w, at)
    assert next_open(w, at) == at
    # At the end instant the window is closed (half-open intervals).
    end = datetime(2026, 12, 1, 17, 0, tzinfo=NY)
    assert not is_open(w, end)
    assert first(w, end)[0][0] == datetime(2026, 12, 2, 9, 0, tzinfo=NY)
    # At the start instant it is open.
    assert is_open(w, datetime(2026, 12, 1, 9, 0, tzinfo=NY))


def test_results_are_aware_utc() -> None:
    w = window("09:00", "17:00")
    for start, end in first(w, datetime(2026, 12, 1, 8, 0, tzinfo=BERLIN), 3):
        assert start.tzinfo is UTC
        assert end.tzinfo is UTC
    assert next_open(w, datetime(2026, 12, 1, 12, 0, tzinfo=NY)).tzinfo is UTC
    assert next_open(None, datetime(2026, 12, 1, 12, 0, tzinfo=NY)) == utc(2026, 12, 1, 17, 0)


def test_end_24_00_is_the_next_local_midnight() -> None:
    w = window("22:00", "24:00", days=["sat"])
    assert first(w, utc(2026, 3, 2)) == [
        (datetime(2026, 3, 7, 22, 0, tzinfo=NY), datetime(2026, 3, 8, 0, 0, tzinfo=NY))
    ]
    # A whole-day window gives one interval per day, touching, never merged.
    whole = window("00:00", "24:00")
    got = first(whole, datetime(2026, 3, 7, 12, 0, tzinfo=NY), 3)
    assert [(s.astimezone(NY), e.astimezone(NY)) for s, e in got] == [
        (datetime(2026, 3, 7, 12, 0, tzinfo=NY), datetime(2026, 3, 8, 0, 0, tzinfo=NY)),
        (datetime(2026, 3, 8, 0, 0, tzinfo=NY), datetime(2026, 3, 9, 0, 0, tzinfo=NY)),
        (datetime(2026, 3, 9, 0, 0, tzinfo=NY), datetime(2026, 3, 10, 0, 0, tzinfo=NY)),
    ]
    assert got[1][1] - got[1][0] == timedelta(hours=23)  # the DST day is 23 h long


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 12, 1, 9, 0)
    w = window("09:00", "17:00")
    with pytest.raises(ValueError, match="aware"):
        next(open_intervals(w, naive))
    with pytest.raises(ValueError, match="aware"):
        next_open(w, naive)
    with pytest.raises(ValueError, match="aware"):
        is_open(None, naive)
    with pytest.raises(ValueError, match="aware"):
        business_days_later(w, naive, 1)
    with pytest.raises(ValueError, match="aware"):
        local_iso(naive, NY)


# --- no window: always open, cut per local day -------------------------------------------------


def test_no_window_is_always_open() -> None:
    at = datetime(2026, 12, 5, 3, 4, 5, tzinfo=NY)
    assert is_open(None, at)
    assert next_open(None, at) == at


def test_no_window_is_cut_at_utc_midnights_by_default() -> None:
    at = utc(2026, 12, 5, 15, 0)
    assert first(None, at, 3) == [
        (at, utc(2026, 12, 6)),
        (utc(2026, 12, 6), utc(2026, 12, 7)),
        (utc(2026, 12, 7), utc(2026, 12, 8)),
    ]


def test_no_window_is_cut_at_local_midnights_of_the_zone_given() -> None:
    at = datetime(2026, 3, 7, 15, 0, tzinfo=NY)
    assert first(None, at, 3, zone=NY) == [
        (at, utc(2026, 3, 8, 5, 0)),  # midnight EST
        (utc(2026, 3, 8, 5, 0), utc(2026, 3, 9, 4, 0)),  # 23 h, then midnight EDT
        (utc(2026, 3, 9, 4, 0), utc(2026, 3, 10, 4, 0)),
    ]


def test_zone_argument_is_ignored_when_a_window_is_given() -> None:
    w = window("09:00", "17:00")
    at = utc(2026, 12, 1)
    assert first(w, at, 3, zone=BERLIN) == first(w, at, 3)


# --- DST: skipped hour -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "transition"),
    [
        ("America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 7, 0)),
        ("Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 29, 1, 0)),
    ],
)
def test_start_in_the_skipped_hour_opens_at_the_transition(
    zone: str, day: date, transition: datetime
) -> None:
    w = window("02:30", "03:30", zone=zone)
    midnight = datetime.combine(day, time(0), tzinfo=ZoneInfo(zone))
    [(start, end)] = first(w, midnight)
    assert start == transition
    assert start.astimezone(ZoneInfo(zone)).time() == time(3, 0)
    assert end == transition + timedelta(minutes=30)
    assert end.astimezone(ZoneInfo(zone)).time() == time(3, 30)
    assert not is_open(w, transition - timedelta(seconds=1))
    assert is_open(w, transition)
    assert next_open(w, midnight) == transition


@pytest.mark.parametrize(
    ("zone", "day"),
    [("America/New_York", date(2026, 3, 8)), ("Europe/Berlin", date(2026, 3, 29))],
)
def test_window_entirely_in_the_skipped_hour_is_closed_that_day(zone: str, day: date) -> None:
    tz = ZoneInfo(zone)
    w = window("02:15", "02:45", zone=zone)
    midnight = datetime.combine(day, time(0), tzinfo=tz)
    got = first(w, midnight, 2)
    next_day = day + timedelta(days=1)
    assert got == [
        (
            datetime.combine(next_day, time(2, 15), tzinfo=tz),
            datetime.combine(next_day, time(2, 45), tzinfo=tz),
        ),
        (
            datetime.combine(next_day + timedelta(days=1), time(2, 15), tzinfo=tz),
            datetime.combine(next_day + timedelta(days=1), time(2, 45), tzinfo=tz),
        ),
    ]
    for minute in range(0, 24 * 60, 5):
        assert not is_open(w, midnight.astimezone(UTC) + timedelta(minutes=minute))
    # Only that one day is lost: with Sundays only, the next interval is a week later.
    sunday_only = window("02:15", "02:45", zone=zone, days=["sun"])
    [(start, end)] = first(sunday_only, midnight)
    assert start.astimezone(tz) == datetime.combine(day + timedelta(days=7), time(2, 15), tzinfo=tz)
    assert start < end


# --- DST: repeated hour ------------------------------------------------------------------------


def test_window_in_the_repeated_hour_opens_once_at_the_first_occurrence_new_york() -> None:
    w = window("01:00", "01:45")
    got = first(w, datetime(2026, 11, 1, 0, 0, tzinfo=NY), 2)
    assert got == [
        (utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 5, 45)),  # 01:00-01:45 EDT
        (utc(2026, 11, 2, 6, 0), utc(2026, 11, 2, 6, 45)),  # next day, EST
    ]
    # The second 01:00-01:45 (EST, 06:00-06:45 UTC) is closed.
    assert not is_open(w, utc(2026, 11, 1, 6, 0))
    assert not is_open(w, utc(2026, 11, 1, 6, 30))
    assert next_open(w, utc(2026, 11, 1, 6, 0)) == utc(2026, 11, 2, 6, 0)
    assert first(w, utc(2026, 11, 1, 5, 50))[0] == (utc(2026, 11, 2, 6, 0), utc(2026, 11, 2, 6, 45))


def test_window_in_the_repeated_hour_opens_once_at_the_first_occurrence_berlin() -> None:
    w = window("02:00", "02:45", zone="Europe/Berlin")
    got = first(w, datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN), 2)
    assert got == [
        (utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 45)),  # 02:00-02:45 CEST
        (utc(2026, 10, 26, 1, 0), utc(2026, 10, 26, 1, 45)),  # next day, CET
    ]
    assert not is_open(w, utc(2026, 10, 25, 1, 10))  # 02:10 CET, the second occurrence


def test_end_after_the_repeated_hour_is_reached_once() -> None:
    # 01:00 EDT (05:00 UTC) to the first 02:00 local, which is 02:00 EST (07:00 UTC): 2 h.
    w = window("01:00", "02:00")
    assert first(w, datetime(2026, 11, 1, 0, 0, tzinfo=NY)) == [
        (utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 7, 0))
    ]


def test_office_hours_around_the_fall_back_weekend_new_york() -> None:
    w = window("09:00", "17:00")
    got = first(w, datetime(2026, 10, 30, 0, 0, tzinfo=NY), 4)
    assert got == [
        (utc(2026, 10, 30, 13, 0), utc(2026, 10, 30, 21, 0)),  # Friday, EDT
        (utc(2026, 10, 31, 13, 0), utc(2026, 10, 31, 21, 0)),  # Saturday, EDT
        (utc(2026, 11, 1, 14, 0), utc(2026, 11, 1, 22, 0)),  # Sunday, EST from 02:00
        (utc(2026, 11, 2, 14, 0), utc(2026, 11, 2, 22, 0)),  # Monday, EST
    ]


def test_office_hours_around_the_spring_forward_weekend_berlin() -> None:
    w = window("09:00", "17:00", zone="Europe/Berlin", days=WEEKDAYS_ONLY)
    got = first(w, datetime(2026, 3, 27, 0, 0, tzinfo=BERLIN), 2)
    assert got == [
        (utc(2026, 3, 27, 8, 0), utc(2026, 3, 27, 16, 0)),  # Friday, CET
        (utc(2026, 3, 30, 7, 0), utc(2026, 3, 30, 15, 0)),  # Monday, CEST
    ]


# --- holidays ----------------------------------------------------------------------------------


def test_thanksgiving_is_not_a_sending_day() -> None:
    w = window("09:00", "17:00", days=WEEKDAYS_ONLY, holidays="US")
    assert not w.is_sending_day(date(2026, 11, 26))
    assert w.is_sending_day(date(2026, 11, 25))
    assert not w.is_sending_day(date(2026, 11, 28))  # Saturday
    wednesday_evening = datetime(2026, 11, 25, 18, 0, tzinfo=NY)
    assert next_open(w, wednesday_evening) == datetime(2026, 11, 27, 9, 0, tzinfo=NY)
    assert not is_open(w, datetime(2026, 11, 26, 10, 0, tzinfo=NY))
    # Without the holiday calendar, Thursday is an ordinary day.
    plain = window("09:00", "17:00", days=WEEKDAYS_ONLY)
    assert is_open(plain, datetime(2026, 11, 26, 10, 0, tzinfo=NY))


def test_business_days_skip_thanksgiving_and_the_weekend() -> None:
    w = window("09:00", "17:00", days=WEEKDAYS_ONLY, holidays="US")
    wednesday = datetime(2026, 11, 25, 10, 0, tzinfo=NY)
    assert business_days_later(w, wednesday, 1) == datetime(2026, 11, 27, 10, 0, tzinfo=NY)
    assert business_days_later(w, wednesday, 2) == datetime(2026, 11, 30, 10, 0, tzinfo=NY)


def test_subdivision_holidays() -> None:
    # Lincoln's Birthday (Feb 12) is a New York State holiday, not a federal one.
    assert not window("09:00", "17:00", holidays="US-NY").is_sending_day(date(2026, 2, 12))
    assert window("09:00", "17:00", holidays="US").is_sending_day(date(2026, 2, 12))


def test_holiday_calendars_are_cached_per_code_and_year() -> None:
    w = window("09:00", "17:00", holidays="DE")
    w.is_sending_day(date(2026, 1, 2))
    before = send_windows._holiday_dates.cache_info()
    for offset in range(30):
        w.is_sending_day(date(2026, 1, 2) + timedelta(days=offset))
    after = send_windows._holiday_dates.cache_info()
    assert after.misses == before.misses
    assert after.hits >= before.hits + 30


# --- business days -----------------------------------------------------------------------------


def test_business_days_without_a_window_count_monday_to_friday_in_utc() -> None:
    friday = utc(2026, 12, 4, 15, 30)
    assert business_days_later(None, friday, 1) == utc(2026, 12, 7, 15, 30)
    assert business_days_later(None, friday, 5) == utc(2026, 12, 11, 15, 30)
    saturday = utc(2026, 12, 5, 8, 0)
    assert business_days_later(None, saturday, 1) == utc(2026, 12, 7, 8, 0)


def test_business_days_count_the_windows_days() -> None:
    w = window("09:00", "17:00", days=["tue", "thu"])
    tuesday = datetime(2026, 12, 1, 10, 0, tzinfo=NY)
    assert business_days_later(w, tuesday, 1) == datetime(2026, 12, 3, 10, 0, tzinfo=NY)
    assert business_days_later(w, tuesday, 2) == datetime(2026, 12, 8, 10, 0, tzinfo=NY)


def test_business_days_keep_the_local_wall_time_across_dst() -> None:
    w = window("09:00", "17:00")
    friday = datetime(2026, 10, 30, 10, 0, tzinfo=NY)
    assert business_days_later(w, friday, 3) == utc(2026, 11, 2, 15, 0)  # 10:00 EST


def test_business_days_landing_in_the_gap_take_the_transition() -> None:
    w = window("09:00", "17:00")
    saturday = datetime(2026, 3, 7, 2, 30, tzinfo=NY)
    assert business_days_later(w, saturday, 1) == utc(2026, 3, 8, 7, 0)  # 03:00 EDT


def test_business_days_landing_in_the_repeated_hour_take_the_first_occurrence() -> None:
    w = window("09:00", "17:00")
    saturday = datetime(2026, 10, 31, 1, 30, tzinfo=NY)
    assert business_days_later(w, saturday, 1) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    # From the second occurrence (01:30 EST on Sunday) the wall time is 01:30 on Monday.
    second = datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NY)
    assert second.astimezone(UTC) == utc(2026, 11, 1, 6, 30)
    assert business_days_later(w, second, 1) == utc(2026, 11, 2, 6, 30)


def test_business_days_use_the_windows_zone_for_the_local_date() -> None:
    # 2026-12-04 03:00 UTC is still Thursday evening in New York.
    w = window("09:00", "17:00", days=WEEKDAYS_ONLY)
    assert business_days_later(w, utc(2026, 12, 4, 3, 0), 1) == utc(2026, 12, 5, 3, 0)
    assert business_days_later(None, utc(2026, 12, 4, 3, 0), 1) == utc(2026, 12, 7, 3, 0)


@pytest.mark.parametrize("days", [0, -1])
def test_business_days_must_be_positive(days: int) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        business_days_later(None, utc(2026, 12, 1), days)


# --- pathological calendars stop --------------------------------------------------------------


class _EveryDay:
    """A holiday calendar in which every date is a holiday."""

    def __contains__(self, item: object) -> bool:
        return True


def test_a_window_with_no_days_never_opens() -> None:
    w = SendWindow(time_zone=NY, days=frozenset(), start=time(9), end=time(17))
    with pytest.raises(InvalidWindow, match="never opens") as caught:
        next(open_intervals(w, utc(2026, 1, 1)))
    assert caught.value.field == "sendWindow"
    with pytest.raises(InvalidWindow, match="never opens"):
        next_open(w, utc(2026, 1, 1))
    with pytest.raises(InvalidWindow, match="never opens"):
        business_days_later(w, utc(2026, 1, 1), 1)


def test_a_holiday_only_calendar_never_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    w = window("09:00", "17:00", holidays="US")
    monkeypatch.setattr(send_windows, "_holiday_dates", lambda code, year: _EveryDay())
    with pytest.raises(InvalidWindow, match="never opens") as caught:
        next(open_intervals(w, utc(2026, 1, 1)))
    assert caught.value.field == "sendWindow"
    with pytest.raises(InvalidWindow, match="never opens"):
        business_days_later(w, utc(2026, 1, 1), 1)


def test_a_window_that_opens_once_a_year_is_still_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    only = date(2026, 12, 24)
    w = window("09:00", "17:00", holidays="US")

    class _AllButOne:
        def __contains__(self, item: object) -> bool:
            return item != only

    monkeypatch.setattr(send_windows, "_holiday_dates", lambda code, year: _AllButOne())
    assert next_open(w, utc(2026, 1, 1)) == datetime(2026, 12, 24, 9, 0, tzinfo=NY)


def _counting_days(monkeypatch: pytest.MonkeyPatch) -> list[date]:
    seen: list[date] = []
    original: Callable[[SendWindow, date], bool] = SendWindow.is_sending_day

    @functools.wraps(original)
    def counted(self: SendWindow, day: date) -> bool:
        seen.append(day)
        return original(self, day)

    monkeypatch.setattr(SendWindow, "is_sending_day", counted)
    return seen


def test_a_sunday_only_window_looks_at_about_a_week_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = window("09:00", "17:00", days=["sun"])
    seen = _counting_days(monkeypatch)
    monday = datetime(2026, 12, 7, 10, 0, tzinfo=NY)
    intervals = first(w, monday, 10)
    assert [s.astimezone(NY).weekday() for s, _ in intervals] == [6] * 10
    assert len(seen) <= 8 * 10


# --- local_iso ---------------------------------------------------------------------------------


def test_local_iso() -> None:
    assert local_iso(utc(2026, 12, 1, 14, 0), NY) == "2026-12-01T09:00-05:00"
    assert local_iso(utc(2026, 7, 1, 13, 0, 59), NY) == "2026-07-01T09:00-04:00"
    assert local_iso(utc(2026, 7, 1, 13, 0), ZoneInfo("UTC")) == "2026-07-01T13:00+00:00"
    assert local_iso(utc(2026, 7, 1, 13, 0), ZoneInfo("Asia/Kolkata")) == "2026-07-01T18:30+05:30"


# --- properties --------------------------------------------------------------------------------

ZONES = sorted(known_zone_names())
"""Every zone a send window accepts (`Factory`, `localtime` and `posixrules` are refused)."""
INTERESTING_ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # 30-minute DST
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "America/Havana",  # transitions at midnight
    "America/Santiago",  # transitions at midnight
    "Asia/Beirut",  # transitions at midnight
    "Antarctica/Troll",  # 2-hour DST
    "Africa/Casablanca",  # DST suspended for Ramadan
    "Asia/Kathmandu",
    "Pacific/Chatham",
]


@functools.cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """Instants (UTC, within a day) at which `zone`'s offset changes in 2005-2035."""
    tz = ZoneInfo(zone)
    found = []
    at = utc(2005, 1, 1)
    offset = at.astimezone(tz).utcoffset()
    while at < utc(2035, 1, 1):
        at += timedelta(days=1)
        now = at.astimezone(tz).utcoffset()
        if now != offset:
            found.append(at)
            offset = now
    return tuple(found)


@st.composite
def windows(draw: st.DrawFn) -> SendWindow:
    zone = draw(st.one_of(st.sampled_from(INTERESTING_ZONES), st.sampled_from(ZONES)))
    days = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(start + 1, 24 * 60))
    holidays = draw(st.sampled_from([None, None, "US", "US-NY", "DE", "NZ"]))
    return parse_window(
        time_zone=zone,
        days=days,
        start=f"{start // 60:02d}:{start % 60:02d}",
        end="24:00" if end == 24 * 60 else f"{end // 60:02d}:{end % 60:02d}",
        holidays=holidays,
    )


@st.composite
def instants(draw: st.DrawFn, zone: ZoneInfo) -> datetime:
    near = transitions(zone.key)
    use_transition: bool = draw(st.booleans())
    if near and use_transition:
        base = draw(st.sampled_from(near))
        return base + timedelta(seconds=draw(st.integers(-3 * 86400, 3 * 86400)))
    return draw(
        st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1))
    ).replace(tzinfo=UTC)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_intervals(
    w: SendWindow | None, after: datetime, intervals: Iterable[tuple[datetime, datetime]]
) -> None:
    previous_end = None
    for index, (start, end) in enumerate(intervals):
        assert start.tzinfo is UTC and end.tzinfo is UTC
        assert start < end
        assert start >= after
        if index == 0:
            assert end > after
        if previous_end is not None:
            assert start >= previous_end  # increasing, disjoint (may touch)
        previous_end = end
        if w is not None and start > after:
            local = start.astimezone(w.time_zone)
            assert w.is_sending_day(local.date()), (start, local)
            assert local.time() >= w.start


@PROPERTY
@given(data=st.data())
def test_property_intervals_are_ordered_nonempty_on_sending_days(data: st.DataObject) -> None:
    w = data.draw(windows())
    after = data.draw(instants(w.time_zone))
    check_intervals(w, after, islice(open_intervals(w, after), 15))


@PROPERTY
@given(data=st.data())
def test_property_no_window_intervals_are_local_days(data: st.DataObject) -> None:
    zone = ZoneInfo(
        data.draw(st.one_of(st.sampled_from(INTERESTING_ZONES), st.sampled_from(ZONES)))
    )
    after = data.draw(instants(zone))
    got = list(islice(open_intervals(None, after, zone=zone), 10))
    check_intervals(None, after, got)
    assert got[0][0] == after
    for (_, end), (start, _) in pairwise(got):
        assert end == start  # contiguous: always open
    for start, _ in got[1:]:
        # Each later interval begins at the first instant of its local date.
        before = (start - timedelta(microseconds=1)).astimezone(zone)
        assert before.date() != start.astimezone(zone).date()


@PROPERTY
@given(data=st.data())
def test_property_is_open_and_next_open_agree_with_the_intervals(data: st.DataObject) -> None:
    w = data.draw(windows())
    t = data.draw(instants(w.time_zone))
    lookback = timedelta(seconds=data.draw(st.integers(0, 10 * 86400)))
    after = t - lookback
    containing = False
    following = None
    for start, end in open_intervals(w, after):
        if start <= t < end:
            containing = True
            break
        if start > t:
            following = start
            break
    assert is_open(w, t) == containing
    opens = next_open(w, t)
    assert opens >= t
    assert (opens == t) == containing
    if not containing:
        assert opens == following
        assert is_open(w, opens)


@PROPERTY
@given(data=st.data())
def test_property_business_days_land_on_sending_days(data: st.DataObject) -> None:
    w = data.draw(st.one_of(st.none(), windows()))
    zone = ZoneInfo("UTC") if w is None else w.time_zone
    at = data.draw(instants(zone))
    days = data.draw(st.integers(1, 15))
    later = business_days_later(w, at, days)
    assert later.tzinfo is UTC
    assert later > at
    local = later.astimezone(zone)
    wall = at.astimezone(zone)
    if local.time() == wall.time():
        # The same wall time, on a sending day.
        if w is None:
            assert local.weekday() < 5
        else:
            assert w.is_sending_day(local.date())
        # Its first occurrence (fold=0 is the earlier reading of a repeated wall time).
        assert local.replace(fold=0).astimezone(UTC) == later
    else:
        # The wall time does not exist that day: `later` is the transition ending the gap.
        before = (later - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
        assert local.replace(tzinfo=None) - before > timedelta(seconds=1)
