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
        raise ValueError(f"must be {ACCEPTED}")
    match = _DURATION.fullmatch(value)
    if match is None or value in {"P", "PT"} or value.endswith("T"):
        raise ValueError(_why_not(value))
    if match["years"] is not None or match["months"] is not None:
        unit = "year (365 or 366 days)" if match["years"] is not None else "month (28 to 31 days)"
        raise ValueError(
            f"{value!r} counts in calendar units: a calendar {unit} has no fixed length, and "
            "a duration here is a fixed length of time; give days (P30D, P365D) instead"
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
    """The message for a string that is not an accepted ISO 8601 duration."""
    if value != value.strip():
        return f"{value!r} has leading or trailing whitespace: {ACCEPTED}"
    if value[:1] in {"-", "+"} and _DURATION.fullmatch(value[1:]):
        return f"{value!r}: a duration here has no sign (it is never negative): {ACCEPTED}"
    upper = value.upper()
    if upper != value and _DURATION.fullmatch(upper) and upper not in {"P", "PT"}:
        return f"{value!r}: ISO 8601 designators are upper case ({upper!r}); must be {ACCEPTED}"
    return f"{value!r} is not {ACCEPTED}"


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
