"""The sending calendar: when a campaign's messages may be delivered (its `sendWindow`).

Pure: no I/O beyond reading zone data (`zoneinfo`) and computing public holidays (`holidays`).

A campaign may set ``sendWindow: {timeZone?, days, start, end, holidays?}``; a lead may carry its
own ``timeZone``, which wins over the window's. `parse_window` checks the JSON values and builds a
`SendWindow`; a value it refuses raises `InvalidWindow` naming the JSON field. Every function that
takes an instant wants an aware `datetime` (any zone) and returns aware UTC datetimes.

Rules
-----
- **Days**: the window's weekdays minus the public holidays of ``holidays`` (a country code as
  the ``holidays`` package knows it, optionally with an ISO 3166-2 subdivision: "US", "US-NY",
  "DE-BY"; its default category, public holidays, observed days included) are the *sending days*.
- **Open interval of a local date D** (a sending day): ``[s, e)`` where ``s`` is the first
  instant whose local wall time (in the window's zone) is at or after ``D start``, and ``e`` the
  first instant whose local wall time is at or after ``D end`` (``D+1 00:00``, the next local
  midnight, when the end is "24:00"). If ``e <= s`` the day has no interval.
- **Skipped hour (DST gap)**: a start inside the gap opens at the transition instant (New York
  2026-03-08, a window 02:30-03:30 opens at 03:00 EDT = 07:00 UTC and closes at 03:30 EDT); a
  window entirely inside the gap (02:15-02:45) is not open that day at all.
- **Repeated hour (DST fold)**: a wall time that happens twice is taken at its first occurrence.
  New York 2026-11-01, a window 01:00-01:45 is open 05:00-05:45 UTC (EDT) and does not open again
  at 01:00 EST. An end after the repeated hour ends when that wall time is first reached, so a
  window 01:00-02:00 that day is open two hours (05:00-07:00 UTC).
- Each local date gives at most one interval; intervals of consecutive days may touch (a window
  00:00-24:00 gives one interval per day, which callers count per-day caps on) and never overlap.
- **No window** (``None``) is always open, but is still cut per local calendar day of a zone
  (UTC unless given): ``[after, next local midnight)``, ``[midnight, next midnight)``, …
- **Business days**: `business_days_later` counts sending days (Mon-Fri without a window) after
  the local date of the given instant and keeps its local wall time, resolved as above (a time
  in a gap becomes the transition instant, a repeated time its first occurrence).
- A window that has no interval in 400 consecutive local days (e.g. a calendar with every
  sending day a holiday) raises ``InvalidWindow("sendWindow", "never opens …")`` rather than loop.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holidays_package

from campaign_engine import zones

__all__ = [
    "MAX_CLOSED_DAYS",
    "WEEKDAYS",
    "InvalidWindow",
    "SendWindow",
    "business_days_later",
    "is_open",
    "local_iso",
    "next_open",
    "open_intervals",
    "parse_window",
    "parse_zone",
]

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""The accepted day names of ``sendWindow.days``; the index is `date.weekday()` (0 = Monday)."""

MAX_CLOSED_DAYS = 400
"""Consecutive local days without an interval (or a sending day) after which a window "never
opens": more than a year, so any real calendar (weekends, holidays, a DST gap) stays below it."""

_ALL_DAYS = frozenset(range(7))
# No window and no zone: days are cut at UTC midnights. Its canonical name, as `parse_zone`
# gives it ("UTC" is a link to it); loaded from the `tzdata` package where the system has none.
_UTC_ZONE = ZoneInfo("Etc/UTC")
_MON_TO_FRI = frozenset(range(5))
# "HH:MM", 24 h, exactly two digits each; "24:00" is handled separately (end only).
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
# IANA zone names: "UTC", "America/New_York", "America/Argentina/Buenos_Aires", "Etc/GMT+5".
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
# ISO 3166-1 alpha-2, optionally "-" and an ISO 3166-2 subdivision code (1-3 letters or digits).
_HOLIDAYS_CODE = re.compile(r"([A-Z]{2})(?:-([A-Z0-9]{1,3}))?")


class InvalidWindow(ValueError):
    """A send window or time zone that cannot be used.

    `field` names the JSON field at fault: ``"sendWindow.timeZone"``, ``"sendWindow.days"``,
    ``"sendWindow.start"``, ``"sendWindow.end"``, ``"sendWindow.holidays"``, ``"lead.timeZone"``,
    or ``"sendWindow"`` for a window that never opens. The message (``str(error)``) says what is
    wrong, for a caller to show as is.
    """

    field: str

    def __init__(self, field: str, message: str) -> None:
        """Keep `field`; `message` becomes the exception's text."""
        super().__init__(message)
        self.field = field

    @property
    def message(self) -> str:
        """The message given at construction."""
        return str(self.args[0])


def parse_zone(name: str, field: str) -> ZoneInfo:
    """The zone named `name`, an IANA time zone name such as "America/New_York" or "Etc/UTC",
    loaded under its canonical name (`campaign_engine.zones`): ``parse_zone("US/Central",
    …).key`` is "America/Chicago", ``parse_zone("UTC", …).key`` is "Etc/UTC".

    Raises `InvalidWindow` on `field` for anything else: a non-string, "", surrounding
    whitespace, paths ("../etc/passwd", "/usr/share/zoneinfo/UTC"), "localtime", "Factory",
    names zoneinfo does not know here ("Mars/Olympus"), and a zone this process cannot load.
    Names are case-sensitive, as in the IANA database ("america/new_york" is refused, the
    message gives the right case).
    """
    if not isinstance(name, str):
        raise InvalidWindow(field, f"must be an IANA time zone name, not {type(name).__name__}")
    if name == "":
        raise InvalidWindow(field, 'must be an IANA time zone name such as "Europe/Berlin", not ""')
    if name != name.strip():
        raise InvalidWindow(field, f"{name!r} has leading or trailing whitespace")
    if not _ZONE_NAME.fullmatch(name):
        raise InvalidWindow(
            field,
            f"{name!r} is not an IANA time zone name (letters, digits, '_', '+', '-' in parts "
            "separated by '/'; no paths)",
        )
    try:
        return zones.load_zone(name)
    except zones.ZoneNameError as error:
        raise InvalidWindow(field, str(error)) from error


def _split_holidays_code(code: str) -> tuple[str, str | None]:
    """``"US-NY"`` → ``("US", "NY")``; ``"DE"`` → ``("DE", None)``. The code must have the shape."""
    match = _HOLIDAYS_CODE.fullmatch(code)
    if match is None:
        raise ValueError(code)
    return match[1], match[2]


@functools.lru_cache(maxsize=512)
def _holiday_dates(code: str, year: int) -> frozenset[date]:
    """The public holidays (observed days included) of `code` ("US", "US-NY") in `year`.

    Cached per (code, year): the `holidays` package builds a calendar per call otherwise.
    `code` must already have passed `parse_window`.
    """
    country, subdiv = _split_holidays_code(code)
    return frozenset(holidays_package.country_holidays(country, subdiv=subdiv, years=year))


def _check_holidays_code(code: object) -> str:
    """`code` if the `holidays` package knows it, else `InvalidWindow` on sendWindow.holidays."""
    field = "sendWindow.holidays"
    if not isinstance(code, str) or not _HOLIDAYS_CODE.fullmatch(code):
        raise InvalidWindow(
            field,
            f"{code!r} is not a country code: ISO 3166 alpha-2, upper case, optionally with a "
            'subdivision ("US", "US-NY", "DE-BY")',
        )
    country, subdiv = _split_holidays_code(code)
    try:
        holidays_package.country_holidays(country, subdiv=subdiv)
    except NotImplementedError as error:
        what = f"country {country!r}" if subdiv is None else f"{country!r} subdivision {subdiv!r}"
        raise InvalidWindow(field, f"no holiday calendar for {what}: {error}") from error
    return code


@dataclass(frozen=True)
class SendWindow:
    """A parsed send window: when, in local wall time of `time_zone`, messages may go out.

    `days` are weekday numbers (0 = Monday … 6 = Sunday); `start` and `end` local wall times at
    minute precision, `end` None meaning "24:00" (the next local midnight); `holidays` the
    country code as given ("US", "US-NY") or None. Build one with `parse_window`; the rules for
    turning it into instants are in this module's docstring.
    """

    time_zone: ZoneInfo
    days: frozenset[int]
    start: time
    end: time | None
    holidays: str | None = None

    def is_sending_day(self, day: date) -> bool:
        """True when `day`'s weekday is one of `days` and it is not a public holiday of
        `holidays` (observed days count as holidays)."""
        if day.weekday() not in self.days:
            return False
        return self.holidays is None or day not in _holiday_dates(self.holidays, day.year)


def _parse_wall_time(value: object, field: str, *, allow_24: bool) -> time | None:
    """ "HH:MM" (24 h, two digits each) → `time`; "24:00" → None when `allow_24`."""
    if isinstance(value, str):
        if allow_24 and value == "24:00":
            return None
        match = _HH_MM.fullmatch(value)
        if match is not None:
            return time(int(match[1]), int(match[2]))
    latest = "24:00" if allow_24 else "23:59"
    meant = _likely_wall_time(value, allow_24=allow_24)
    guess = f"; did you mean {meant!r}?" if meant is not None else ""
    raise InvalidWindow(field, f'{value!r} is not a time "HH:MM" (24 h, 00:00-{latest}){guess}')


# What people write for a time of day: "9:00", "9am", "5 pm", "17:00:00", "1700", "9h30".
_LOOSE_TIME = re.compile(
    r"\s*([0-9]{1,2})(?:(?:[:.h]|\s*)([0-9]{2})?(?::[0-9]{2})?)?\s*([ap]\.?m\.?)?\s*",
    re.IGNORECASE,
)


def _likely_wall_time(value: object, *, allow_24: bool) -> str | None:
    """The "HH:MM" a refused time probably means (`"9:00"`, `"9am"` → `"09:00"`, `"5 pm"` →
    `"17:00"`, `"17:00:00"` → `"17:00"`, `"1700"` → `"17:00"`), or None."""
    if not isinstance(value, str):
        return None
    match = _LOOSE_TIME.fullmatch(value)
    if match is None:
        return None
    hours, minutes = int(match[1]), int(match[2] or 0)
    if match[3]:
        if not 1 <= hours <= 12:
            return None
        hours = hours % 12 + (12 if match[3][0].lower() == "p" else 0)
    shown = f"{hours:02d}:{minutes:02d}"
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        return None
    return None if shown == value else shown


def _parse_days(days: object) -> frozenset[int]:
    """["mon", "fri"] → {0, 4}; refuses an empty list, unknown names and duplicates."""
    field = "sendWindow.days"
    if not isinstance(days, list | tuple) or not days:
        raise InvalidWindow(field, f"must be a non-empty list of day names ({', '.join(WEEKDAYS)})")
    numbers: set[int] = set()
    for name in days:
        if not isinstance(name, str) or name not in WEEKDAYS:
            raise InvalidWindow(
                field, f"{name!r} is not a day name: use lowercase {', '.join(WEEKDAYS)}"
            )
        number = WEEKDAYS.index(name)
        if number in numbers:
            raise InvalidWindow(field, f"{name!r} is listed twice")
        numbers.add(number)
    return frozenset(numbers)


def parse_window(
    *,
    time_zone: str | None,
    days: list[str],
    start: str,
    end: str,
    holidays: str | None = None,
    lead_time_zone: str | None = None,
) -> SendWindow:
    """Check a campaign's ``sendWindow`` (and a lead's ``timeZone``) and build the `SendWindow`.

    - `time_zone`: IANA name (`parse_zone`), None → "UTC"; `lead_time_zone`, when not None, is
      checked the same way and wins (the lead's zone is where the reader is).
    - `days`: non-empty list of lowercase "mon" … "sun", no duplicates.
    - `start`, `end`: "HH:MM", 24 h, exactly that shape; "24:00" for `end` only. `end` must be
      after `start`: windows crossing midnight (overnight) are refused.
    - `holidays`: a country code, optionally with its subdivision ("US", "US-NY", "DE"), that the
      `holidays` package knows.

    Raises `InvalidWindow` with the field at fault ("sendWindow.timeZone", "sendWindow.days",
    "sendWindow.start", "sendWindow.end", "sendWindow.holidays", "lead.timeZone"), checked in that
    order.
    """
    zone = parse_zone("UTC" if time_zone is None else time_zone, "sendWindow.timeZone")
    day_numbers = _parse_days(days)
    start_time = _parse_wall_time(start, "sendWindow.start", allow_24=False)
    assert start_time is not None  # allow_24=False never gives None
    end_time = _parse_wall_time(end, "sendWindow.end", allow_24=True)
    if end_time is not None and end_time <= start_time:
        raise InvalidWindow(
            "sendWindow.end",
            f"end {end} must be after start {start}: overnight windows (crossing midnight) are "
            'not supported; "24:00" ends a window at midnight',
        )
    holidays_code = None if holidays is None else _check_holidays_code(holidays)
    if lead_time_zone is not None:
        zone = parse_zone(lead_time_zone, "lead.timeZone")
    return SendWindow(
        time_zone=zone, days=day_numbers, start=start_time, end=end_time, holidays=holidays_code
    )


def _utc(at: datetime, name: str = "at") -> datetime:
    """`at` in UTC; refuses a naive datetime (ValueError), whose instant is unknown."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {at.isoformat()}")
    return at.astimezone(UTC)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive local wall time of the aware `instant` in `zone` (fold dropped)."""
    return instant.astimezone(zone).replace(tzinfo=None)


def _first_at_or_after(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) whose local wall time in `zone` is at or after the naive `wall`.

    Normal time: the one instant showing `wall`. Repeated (fold): its first occurrence. Skipped
    (gap): the transition instant that ends the gap, found by bisection between the two readings
    of `wall` (fold=1 and fold=0), to the second (zone transitions are whole seconds in TZif).
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(first, second), max(first, second)
    if _wall(low, zone) >= wall:
        return low
    # A gap: `low` shows a wall time before `wall`, `high` one after it. Bisect on whole seconds
    # (invariant: low shows < wall, high shows >= wall).
    lo_s, hi_s = 0, int((high - low).total_seconds())
    if hi_s == 0 or _wall(high, zone) < wall:  # not a gap after all; cannot happen with TZif
        return high
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _wall(low + timedelta(seconds=mid), zone) >= wall:
            hi_s = mid
        else:
            lo_s = mid
    return low + timedelta(seconds=hi_s)


def _interval_of(window: SendWindow, day: date) -> tuple[datetime, datetime] | None:
    """The open interval (UTC) of local date `day`, or None when it has none (see module rules).

    Does not check that `day` is a sending day.
    """
    zone = window.time_zone
    begin = _first_at_or_after(datetime.combine(day, window.start), zone)
    if window.end is None:
        end_wall = datetime.combine(day + timedelta(days=1), time(0))
    else:
        end_wall = datetime.combine(day, window.end)
    finish = _first_at_or_after(end_wall, zone)
    return (begin, finish) if begin < finish else None


def _never_opens(window: SendWindow, since: date) -> InvalidWindow:
    """The error for a window with no interval in `MAX_CLOSED_DAYS` consecutive local days."""
    return InvalidWindow(
        "sendWindow",
        f"never opens: no sending time in {MAX_CLOSED_DAYS} consecutive days from {since} "
        f"(days {sorted(window.days)}, holidays {window.holidays!r}, zone {window.time_zone.key})",
    )


def _always(zone: ZoneInfo | None) -> SendWindow:
    """What window None means: every day, all day, cut at local midnights of `zone` (UTC)."""
    return SendWindow(
        time_zone=zone if zone is not None else _UTC_ZONE,
        days=_ALL_DAYS,
        start=time(0),
        end=None,
    )


def open_intervals(
    window: SendWindow | None, after: datetime, *, zone: ZoneInfo | None = None
) -> Iterator[tuple[datetime, datetime]]:
    """The window's open intervals ``(start, end)`` from `after` on: aware UTC, ``start < end``.

    In order, one per sending day with an interval (rules in the module docstring); intervals
    ending at or before `after` are skipped, and the one containing `after` is clipped to begin at
    `after` (aware, any zone; ValueError if naive). Infinite: take what you need
    (`itertools.islice`). Window None is always open but cut per local calendar day of `zone`
    (UTC when None): ``[after, next midnight)``, ``[midnight, next midnight)``, …; `zone` is
    ignored when a window is given (its own zone, the lead's if it had one, applies).

    Cost: each interval takes at most one local day per calendar day between it and the last
    (a Sunday-only window looks at 7-8 days). Raises `InvalidWindow` on "sendWindow" ("never
    opens") after `MAX_CLOSED_DAYS` consecutive local days without an interval.
    """
    instant = _utc(after, "after")
    effective = window if window is not None else _always(zone)
    # No earlier date's interval can contain `after`: each ends at or before the first instant
    # showing the next local midnight, and `after` shows this date. (A fold back across midnight
    # can put `after` in the next date's interval while it shows this date; the loop gets there.)
    day = _wall(instant, effective.time_zone).date()
    closed_since, closed_days = day, 0
    while True:
        interval = _interval_of(effective, day) if effective.is_sending_day(day) else None
        day += timedelta(days=1)
        if interval is None:
            closed_days += 1
            if closed_days >= MAX_CLOSED_DAYS:
                raise _never_opens(effective, closed_since)
            continue
        closed_since, closed_days = day, 0
        begin, finish = interval
        if finish <= instant:
            continue
        yield (max(begin, instant), finish)


def next_open(window: SendWindow | None, at: datetime) -> datetime:
    """`at` (as UTC) if the window is open then, else the start of its next interval (UTC).

    Window None → `at`. Raises ValueError for a naive `at`, `InvalidWindow` ("never opens")
    like `open_intervals`.
    """
    instant = _utc(at)
    if window is None:
        return instant
    begin, _ = next(open_intervals(window, instant))
    return begin


def is_open(window: SendWindow | None, at: datetime) -> bool:
    """Whether `at` (aware) lies inside one of the window's open intervals; window None → True.

    Agrees with `open_intervals` by construction. Raises ValueError for a naive `at`.
    """
    instant = _utc(at)
    return window is None or next_open(window, instant) == instant


def business_days_later(window: SendWindow | None, at: datetime, days: int) -> datetime:
    """The same local wall time on the `days`-th sending day after `at`'s local date (UTC).

    Local means the window's zone (UTC for window None). Sending days are the window's days
    minus its holidays; for window None, Monday to Friday. `days` >= 1 (ValueError otherwise).
    The wall time (to the microsecond) is resolved on that date as in the module rules: in a DST
    gap, the first instant at or after it (the transition); repeated, its first occurrence. The
    result is not moved into the window's hours: follow with `next_open` for that. Raises
    `InvalidWindow` ("never opens") after `MAX_CLOSED_DAYS` consecutive non-sending days.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be an integer >= 1, got {days!r}")
    instant = _utc(at)
    if window is None:
        zone = _UTC_ZONE
        calendar = SendWindow(time_zone=zone, days=_MON_TO_FRI, start=time(0), end=None)
    else:
        zone, calendar = window.time_zone, window
    wall = _wall(instant, zone)
    day, counted, closed_days = wall.date(), 0, 0
    while counted < days:
        day += timedelta(days=1)
        if calendar.is_sending_day(day):
            counted, closed_days = counted + 1, 0
        else:
            closed_days += 1
            if closed_days >= MAX_CLOSED_DAYS:
                raise _never_opens(calendar, day - timedelta(days=closed_days - 1))
    return _first_at_or_after(datetime.combine(day, wall.time()), zone)


def local_iso(at: datetime, zone: ZoneInfo) -> str:
    """`at` as local time in `zone`, ISO 8601 to the minute with its offset.

    E.g. ``"2026-12-01T09:00-05:00"``; what operators are shown ("approved, sends at …").
    Seconds are truncated. Raises ValueError for a naive `at`.
    """
    return _utc(at).astimezone(zone).isoformat(timespec="minutes")
