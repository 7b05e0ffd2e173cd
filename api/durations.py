"""Durations in the API: ISO 8601 in, ISO 8601 out, meaning exactly what was written.

Accepted (`parse_duration`):

- an ISO 8601 duration (ISO 8601-1:2019 §5.5.2) in days, hours, minutes and seconds:
  ``P1D``, ``PT12H``, ``PT1M``, ``PT90S``, ``P1DT12H30M``, ``PT0S``; weeks alone (``P2W``, 14
  days); a decimal fraction (``.`` or ``,``) on the last component only (``PT0.5S``,
  ``P1.5D``), as long as the result is a whole number of microseconds;
- a JSON number of seconds, 0 or more (``60``, ``0.5``), at most six decimals.

Every unit accepted is a fixed length: a day is 24 hours, as the workflow's timers count it.
Months and years are not (28 to 31 days, 365 or 366): ``P1M`` and ``P1Y`` are refused, with a
message that says to give days, rather than read as 30 or 365 days and shown back as
something else.
Also refused, each with a message showing the accepted form: anything that is not ISO 8601
(``"1 day"``, ``"1m"``, ``"01:00:00"``, ``"60"``), lower-case designators (``"p1d"``), a sign
(``"-P1D"``, ``"+P1D"``), empty components (``"P"``, ``"PT"``, ``"P1DT"``), and booleans.

A refusal says what was probably meant when that can be told (`suggestion`): the units people
write (``"1m"``, ``"5 minutes"``, ``"1h30m"``, ``"2d"``, ``"1.5 hours"``, ``"2 weeks"``), a
clock (``"01:30:00"``), a number in a string (``"60"``), ISO 8601 near-misses (``"PT1m"``,
``"P1H"`` without its ``T``, ``"PT1D"`` with one too many, ``"T1M"`` without its ``P``,
``"P2W3D"``, ``"PT1H30"`` without its last designator, spaces inside) and calendar units (``P1M``:
``PT1M`` if a minute was meant, ``P30D`` if a month). ``"1m"`` reads as a minute, as in Go,
systemd and most CLI tools; ``"1M"`` and ``"1 month"`` as a month.

Shown (`format_duration`): the same length in days, hours, minutes and seconds, largest units
first, zero components left out (``P1DT12H``, ``PT1M30S``, ``PT0.5S``, ``PT0S``), so what a GET
shows can be PUT again as it is and means the same. ``P1W`` reads back as ``P7D``; ``PT24H`` as
``P1D``; ``PT90S`` as ``PT1M30S``.

Stored campaigns written before these rules keep reading (`parse_stored_duration`): their
definitions hold the ISO strings pydantic wrote then, in which 365 days was written ``P1Y``.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, TypeAdapter, ValidationInfo, WithJsonSchema

__all__ = [
    "STORED_CONTEXT",
    "Duration",
    "format_duration",
    "parse_duration",
    "parse_stored_duration",
    "suggestion",
    "validate_duration",
]

STORED_CONTEXT = "stored_definition"
"""The pydantic validation context key (``{STORED_CONTEXT: True}``) under which a model is read
from the store rather than from a request: durations then also take their old stored forms."""

ACCEPTED = (
    "an ISO 8601 duration such as PT1M (one minute), PT2H, P1D, P1DT12H or PT0S, or a number of "
    "seconds"
)

_NUMBER = r"[0-9]+(?:[.,][0-9]+)?"
_DURATION = re.compile(
    rf"P(?:(?P<weeks>{_NUMBER})W"
    rf"|(?:(?P<years>{_NUMBER})Y)?(?:(?P<months>{_NUMBER})M)?(?:(?P<days>{_NUMBER})D)?"
    rf"(?:T(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?(?:(?P<seconds>{_NUMBER})S)?)?)"
)
_UNITS: dict[str, Decimal] = {
    "weeks": Decimal(7 * 86_400_000_000),
    "days": Decimal(86_400_000_000),
    "hours": Decimal(3_600_000_000),
    "minutes": Decimal(60_000_000),
    "seconds": Decimal(1_000_000),
}
_MAX_MICROSECONDS = int(timedelta.max / timedelta(microseconds=1))
_PYDANTIC_TIMEDELTA: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def _microseconds(value: Decimal, said: str) -> timedelta:
    """`value` microseconds as a timedelta; ValueError unless whole and within range."""
    if value != value.to_integral_value():
        raise ValueError(f"{said} is finer than a microsecond: round it to at most six decimals")
    if value > _MAX_MICROSECONDS:
        raise ValueError(f"{said} is too long")
    return timedelta(microseconds=int(value))


def parse_duration(value: object) -> timedelta:
    """`value` (a JSON string or number) as a timedelta, by the rules of the module docstring.

    Raises ValueError with a message for the caller (it names the accepted form); a timedelta
    is returned as it is (a model built in Python).
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"must be {ACCEPTED}, not a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be {ACCEPTED}, not {value}")
        if value < 0:
            raise ValueError(f"must not be negative: {ACCEPTED}")
        return _microseconds(Decimal(repr(value)) * _UNITS["seconds"], f"{value} seconds")
    if not isinstance(value, str):
        kind = (
            "an object"
            if isinstance(value, dict)
            else "a list"
            if isinstance(value, list)
            else None
        )
        said = f", not {kind}" if kind else ""
        raise ValueError(f"must be {ACCEPTED}{said}{_did_you_mean(value)}")
    match = _DURATION.fullmatch(value)
    if match is None or value in {"P", "PT"} or value.endswith("T"):
        raise ValueError(_why_not(value))
    if match["years"] is not None or match["months"] is not None:
        unit = "year (365 or 366 days)" if match["years"] is not None else "month (28 to 31 days)"
        raise ValueError(
            f"{value!r} counts in calendar units: a calendar {unit} has no fixed length, and "
            f"a duration here is a fixed length of time; give days instead"
            f"{_calendar_readings(match)} Accepted: {ACCEPTED}"
        )
    present = [(unit, match[unit]) for unit in _UNITS if match[unit] is not None]
    for unit, number in present[:-1]:
        if not number.isdigit():
            raise ValueError(
                f"{value!r}: only the last component may have a fraction ({unit} has one); "
                "e.g. P1DT12H rather than P1.5DT0H"
            )
    try:
        total = sum(
            (Decimal(number.replace(",", ".")) * _UNITS[unit] for unit, number in present),
            Decimal(0),
        )
    except InvalidOperation as error:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(_why_not(value)) from error
    return _microseconds(total, repr(value))


def _why_not(value: str) -> str:
    """The message for a string that is not an accepted ISO 8601 duration: what is wrong, the
    likely intended value (`suggestion`) when there is one, and the accepted form."""
    meant = _did_you_mean(value)
    if value != value.strip():
        return f"{value!r} has leading or trailing whitespace{meant} Accepted: {ACCEPTED}"
    if value[:1] in {"-", "+"} and (
        _DURATION.fullmatch(value[1:]) or suggestion(value[1:]) is not None
    ):
        return f"{value!r}: a duration here has no sign (it is never negative): {ACCEPTED}"
    upper = value.upper()
    if upper != value and _DURATION.fullmatch(upper) and upper not in {"P", "PT"}:
        return f"{value!r}: ISO 8601 designators are upper case ({upper!r}); must be {ACCEPTED}"
    if _NUMBER_TEXT.fullmatch(value.strip()):
        return (
            f"{value!r} is a number in a string: send seconds as a JSON number "
            f"({value.strip().replace(',', '.')}, no quotes) or ISO 8601{meant} "
            f"Accepted: {ACCEPTED}"
        )
    if meant:
        return f"{value!r} is not an ISO 8601 duration{meant} Accepted: {ACCEPTED}"
    return f"{value!r} is not {ACCEPTED}"


# --- what was probably meant ----------------------------------------------------------------

_NUMBER_TEXT = re.compile(r"[0-9]+(?:[.,][0-9]+)?")
_UNIT_WORDS: dict[str, str] = {
    **dict.fromkeys(["ms", "msec", "msecs", "millisecond", "milliseconds"], "milliseconds"),
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], "seconds"),
    **dict.fromkeys(["m", "min", "mins", "minute", "minutes"], "minutes"),
    **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], "hours"),
    **dict.fromkeys(["d", "day", "days"], "days"),
    **dict.fromkeys(["w", "wk", "wks", "week", "weeks"], "weeks"),
    **dict.fromkeys(["mo", "mos", "mon", "month", "months"], "months"),
    **dict.fromkeys(["y", "yr", "yrs", "year", "years"], "years"),
}
"""Units as people write them, lower case; ``M`` alone (upper case) is a month (`_unit_of`)."""
_CALENDAR_DAYS = {"months": 30, "years": 365}
"""The days a calendar unit is offered as (`suggestion`), saying it is an approximation."""
_HUMAN_PART = re.compile(r"\s*(?:(?:,|and\b)\s*)?([0-9]+(?:[.,][0-9]+)?)\s*([A-Za-z]+)\.?")
_CLOCK = re.compile(r"([0-9]+):([0-5][0-9])(?::([0-5][0-9](?:[.,][0-9]+)?))?")
_ISO_PART = re.compile(r"([0-9]+(?:[.,][0-9]+)?)([YMWDHS])|(T)")
_IN_WORDS = (("day", 86_400_000_000), ("hour", 3_600_000_000), ("minute", 60_000_000))


def _unit_of(word: str) -> str | None:
    """The unit `word` names (`_UNIT_WORDS`), None for none; ``M`` alone is a month, ``m`` a
    minute, as in most tools that read ``1m``."""
    if word == "M":
        return "months"
    return _UNIT_WORDS.get(word.lower())


def _total(parts: list[tuple[str, str]]) -> tuple[timedelta, bool] | None:
    """`parts` (number, unit) added up, months as 30 days and years as 365; with whether a
    calendar unit was among them. None when the sum is no valid duration."""
    micro = Decimal(0)
    calendar = False
    for number, unit in parts:
        amount = Decimal(number.replace(",", "."))
        if unit in _CALENDAR_DAYS:
            calendar = True
            micro += amount * _CALENDAR_DAYS[unit] * _UNITS["days"]
        elif unit == "milliseconds":
            micro += amount * 1000
        else:
            micro += amount * _UNITS[unit]
    if micro != micro.to_integral_value() or micro > _MAX_MICROSECONDS:
        return None
    return timedelta(microseconds=int(micro)), calendar


def _human_parts(text: str) -> list[tuple[str, str]] | None:
    """``"1h 30m"``, ``"5 minutes"``, ``"1 hour and 30 minutes"``, ``"2d"`` as (number, unit)
    pairs; ``a``/``an``/``one`` count as 1. None unless the whole text is such pairs."""
    text = re.sub(r"^(?:an?|one)\s+", "1 ", text.strip(), flags=re.IGNORECASE)
    parts: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        part = _HUMAN_PART.match(text, position)
        if part is None or part.end() == position:
            return None
        unit = _unit_of(part[2])
        if unit is None:
            return None
        parts.append((part[1], unit))
        position = part.end()
    return parts or None


def _iso_parts(text: str) -> list[tuple[str, str]] | None:
    """An ISO 8601 duration written loosely (designators in any case, ``P`` or ``T`` missing or
    misplaced, weeks with days, inner spaces, a last number without its designator) as (number,
    unit) pairs. ``M`` is minutes after a ``T`` or an ``H``, else months. None unless the whole
    text reads so."""
    text = re.sub(r"\s+", "", text.upper())
    text = text.removeprefix("P")
    if not text:
        return None
    parts: list[tuple[str, str]] = []
    timed = False
    position = 0
    while position < len(text):
        part = _ISO_PART.match(text, position)
        if part is None:
            tail = text[position:]
            last = parts[-1][1] if parts else None
            # "PT1H30": the last number's designator left out, after hours or minutes.
            if _NUMBER_TEXT.fullmatch(tail) and last in {"hours", "minutes"}:
                parts.append((tail, "minutes" if last == "hours" else "seconds"))
                return parts
            return None
        position = part.end()
        if part[3]:
            timed = True
            continue
        letter = part[2]
        if letter == "M":
            unit = "minutes" if timed or (parts and parts[-1][1] == "hours") else "months"
        else:
            unit = {"Y": "years", "W": "weeks", "D": "days", "H": "hours", "S": "seconds"}[letter]
        parts.append((part[1], unit))
    return parts or None


def suggestion(value: object) -> str | None:
    """The ISO 8601 duration `value` probably means, when `parse_duration` refuses it and the
    intent can be told: ``"1m"`` → ``"PT1M"``, ``"5 minutes"`` → ``"PT5M"``, ``"2d"`` →
    ``"P2D"``, ``"01:30:00"`` → ``"PT1H30M"``, ``"60"`` → ``"PT1M"``, ``"P1H"`` → ``"PT1H"``,
    ``"PT1D"`` → ``"P1D"``, ``{"minutes": 5}`` → ``"PT5M"``. A month counts 30 days and a year
    365 (``"2 months"`` → ``"P60D"``): the message says so. None when nothing reads as a
    duration, or when `value` is accepted as it is."""
    parts: list[tuple[str, str]] | None = None
    if isinstance(value, dict):
        parts = []
        for key, number in value.items():
            unit = _unit_of(str(key))
            if unit is None or isinstance(number, bool) or not isinstance(number, int | float):
                return None
            parts.append((repr(number), unit))
    elif isinstance(value, str):
        text = value.strip()
        if text[:1] in {"-", "+"}:
            return None  # a sign is its own mistake; the message says so
        clock = _CLOCK.fullmatch(text)
        if _NUMBER_TEXT.fullmatch(text):
            parts = [(text, "seconds")]
        elif clock:
            parts = [(clock[1], "hours"), (clock[2], "minutes"), (clock[3] or "0", "seconds")]
        else:
            parts = _human_parts(text) or _iso_parts(text)
    if not parts:
        return None
    try:
        total = _total(parts)
    except InvalidOperation:
        return None
    if total is None:
        return None
    shown = format_duration(total[0])
    return None if shown == value else shown


def _in_words(duration: timedelta) -> str:
    """`duration` in words: ``1 day 12 hours``, ``1 minute``, ``0.5 seconds``."""
    micro = duration // timedelta(microseconds=1)
    words: list[str] = []
    for name, size in _IN_WORDS:
        count, micro = divmod(micro, size)
        if count:
            words.append(f"{count} {name}{'s' if count != 1 else ''}")
    if micro or not words:
        seconds = Decimal(micro) / 1_000_000
        shown = format(seconds.normalize(), "f")
        words.append(f"{shown} second{'s' if seconds != 1 else ''}")
    return " ".join(words)


def _did_you_mean(value: object) -> str:
    """`` Did you mean 'PT1M' (1 minute)?`` for a `value` with a `suggestion`, with a note when
    a calendar unit was counted in days; else ``.``: each ends the sentence before it."""
    meant = suggestion(value)
    if meant is None:
        return "."
    length = _in_words(parse_duration(meant))
    calendar = ""
    parts = _human_parts(value) or _iso_parts(value) if isinstance(value, str) else None
    if parts and any(unit in _CALENDAR_DAYS for _, unit in parts):
        calendar = ", counting a month as 30 days and a year as 365"
    return f"; did you mean {meant!r} ({length}{calendar})?"


def _calendar_readings(match: re.Match[str]) -> str:
    """For a refused ``P…M``/``P…Y``: the fixed lengths it may have meant. ``P1M`` alone may be
    a minute whose ``T`` was left out (``PT1M``) or a month (``P30D``)."""
    readings: list[str] = []
    only_months = match["months"] is not None and all(
        match[unit] is None for unit in ("years", "days", "hours", "minutes", "seconds")
    )
    if only_months:
        minutes = _total([(match["months"], "minutes")])
        if minutes is not None:
            readings.append(
                f"{format_duration(minutes[0])!r} ({_in_words(minutes[0])}: minutes come "
                "after the T)"
            )
    parts = [
        (match[unit], unit)
        for unit in ("years", "months", "days", "hours", "minutes", "seconds")
        if match[unit] is not None
    ]
    days = _total(parts)
    if days is not None:
        counted = [
            f"a {unit} as {_CALENDAR_DAYS[unit + 's']} days"
            for unit in ("month", "year")
            if match[unit + "s"] is not None
        ]
        readings.append(f"{format_duration(days[0])!r} (counting {' and '.join(counted)})")
    return f"; did you mean {' or '.join(readings)}?" if readings else "."


def parse_stored_duration(value: object) -> timedelta:
    """A duration read from a stored definition: the rules of `parse_duration`, and the forms
    pydantic wrote before them (``P1Y`` for 365 days; any number of days, hours, minutes and
    seconds), read as they were read then (pydantic's own parser), so an instance enrolled
    after an upgrade waits what the campaign's author was shown."""
    try:
        return parse_duration(value)
    except ValueError:
        return _PYDANTIC_TIMEDELTA.validate_python(value)


def format_duration(duration: timedelta) -> str:
    """`duration` as an ISO 8601 duration in days, hours, minutes and seconds (largest units
    first, zero components left out; ``PT0S`` for zero): ``timedelta(days=1, hours=12)`` →
    ``P1DT12H``, ``timedelta(seconds=0.5)`` → ``PT0.5S``. `parse_duration` reads it back to the
    same timedelta."""
    if duration < timedelta(0):
        return "-" + format_duration(-duration)
    total = duration // timedelta(microseconds=1)
    days, rest = divmod(total, 86_400_000_000)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micro = divmod(rest, 1_000_000)
    date_part = f"{days}D" if days else ""
    time_part = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or micro:
        fraction = f".{micro:06d}".rstrip("0") if micro else ""
        time_part += f"{seconds}{fraction}S"
    if not date_part and not time_part:
        return "PT0S"
    return "P" + date_part + (f"T{time_part}" if time_part else "")


def validate_duration(value: Any, info: ValidationInfo) -> timedelta:
    """The before-validator of `Duration`: `parse_duration`, or `parse_stored_duration` when
    the model is read under `STORED_CONTEXT`."""
    if isinstance(info.context, dict) and info.context.get(STORED_CONTEXT):
        return parse_stored_duration(value)
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(validate_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "pattern": r"^P(?=[0-9T])(?!.*T$)"
                    r"(?:[0-9]+(?:[.,][0-9]+)?W|(?:[0-9]+(?:[.,][0-9]+)?D)?"
                    r"(?:T(?:[0-9]+(?:[.,][0-9]+)?H)?(?:[0-9]+(?:[.,][0-9]+)?M)?"
                    r"(?:[0-9]+(?:[.,][0-9]+)?S)?)?)$",
                    "examples": ["PT1M", "P1DT12H"],
                },
                {"type": "number", "minimum": 0},
            ],
            "description": "ISO 8601 duration in weeks, days, hours, minutes, seconds (a day "
            "is 24 h; months and years are refused: not a fixed length), or a number of "
            "seconds. Read back in days, hours, minutes, seconds (`P1W` as `P7D`).",
        }
    ),
]
"""A duration field of the API: `parse_duration` in, `format_duration` out (JSON)."""
