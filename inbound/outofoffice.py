"""The return date an out-of-office answer gives, when its text gives one.

`return_date(text, reference)` looks for a phrase that announces a return, then a date right
after it (up to 40 characters later, past a weekday or "the"). Only the first
`MAX_SCAN_CHARS` characters are read: responders put the date at the top, and the quoted
original further down holds dates that are not return dates (the caller strips it first,
see `inbound.excerpt.new_text`). Rules of our own, no standard exists; English and German.

Phrases (case-insensitive):

- English: `back` (`back on`, `back in the office on`, `back at work`, …), `return`/`returning`
  (`return to the office on`, …), `until`, `till`, `through`, `available again`/`available from`,
  `away until`, `out of (the) office until`;
- German: `zurück` (`zurück am`), `wieder` (`wieder im Büro ab`, `wieder erreichbar am`), `bis`
  (`bis zum`, `bis einschließlich`), `ab` (`ab dem`).

Dates after a phrase:

- ISO 8601 `2025-12-12`;
- day.month[.year] `12.12.2025`, `12.12.`, `12.12.25` (the European order);
- month/day[/year] only when unambiguous (`12/24` is 24 December; `05/06` is neither and gives
  no date);
- month names, English or German, full or three letters, with or without a weekday before:
  `Dec 12`, `December 12th, 2025`, `Monday, December 15`, `12 December`, `12th of December
  2025`, `12. Dezember`, `Mo., 15. Dezember 2025`;
- a weekday alone (`back on Monday`, `ab Montag`): the first such day after the reference;
- `tomorrow`/`morgen`: the day after the reference.

A date without a year is the first such day on or after the reference date. Without a reference
only dates with a year are read. A result more than 366 days after or 1 day before the reference
is not a return date and gives None.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

MAX_SCAN_CHARS = 4_000
MAX_DAYS_AHEAD = 366

_MONTHS = {
    "jan": 1,
    "january": 1,
    "januar": 1,
    "jän": 1,
    "feb": 2,
    "february": 2,
    "februar": 2,
    "mar": 3,
    "march": 3,
    "mär": 3,
    "märz": 3,
    "maerz": 3,
    "apr": 4,
    "april": 4,
    "may": 5,
    "mai": 5,
    "jun": 6,
    "june": 6,
    "juni": 6,
    "jul": 7,
    "july": 7,
    "juli": 7,
    "aug": 8,
    "august": 8,
    "sep": 9,
    "sept": 9,
    "september": 9,
    "oct": 10,
    "october": 10,
    "okt": 10,
    "oktober": 10,
    "nov": 11,
    "november": 11,
    "dec": 12,
    "december": 12,
    "dez": 12,
    "dezember": 12,
}
_WEEKDAYS = {
    "mon": 0,
    "monday": 0,
    "montag": 0,
    "mo": 0,
    "tue": 1,
    "tues": 1,
    "tuesday": 1,
    "dienstag": 1,
    "di": 1,
    "wed": 2,
    "wednesday": 2,
    "mittwoch": 2,
    "mi": 2,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "thursday": 3,
    "donnerstag": 3,
    "do": 3,
    "fri": 4,
    "friday": 4,
    "freitag": 4,
    "fr": 4,
    "sat": 5,
    "saturday": 5,
    "samstag": 5,
    "sa": 5,
    "sun": 6,
    "sunday": 6,
    "sonntag": 6,
    "so": 6,
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAY = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))

_TRIGGER = re.compile(
    r"\b(?:"
    r"back(?:\s+(?:in|at|to)\s+(?:the\s+)?(?:office|work|my\s+desk))?(?:\s+(?:on|from|by))?"
    r"|return(?:ing)?(?:\s+to\s+(?:the\s+)?(?:office|work))?(?:\s+on)?"
    r"|available\s+(?:again(?:\s+(?:on|from))?|from|on)"
    r"|until|till|through"
    r"|zurück(?:\s+am)?"
    r"|wieder(?:\s+(?:im\s+büro|erreichbar|da))?(?:\s+(?:am|ab))?"
    r"|bis(?:\s+(?:zum|einschließlich|inklusive|am))?"
    r"|ab(?:\s+(?:dem|am))?"
    r")\s+(?:the\s+)?",
    re.IGNORECASE,
)
_OPTIONAL_WEEKDAY = rf"(?:(?:{_WEEKDAY})\.?,?\s+)?"
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})\b")
_DOTTED = re.compile(_OPTIONAL_WEEKDAY + r"(\d{1,2})\.(\d{1,2})\.(?:(\d{4}|\d{2})\b)?")
_SLASHED = re.compile(r"(\d{1,2})/(\d{1,2})(?:/(\d{4}|\d{2}))?\b")
_MONTH_DAY = re.compile(
    _OPTIONAL_WEEKDAY + rf"({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}})\b)?",
    re.IGNORECASE,
)
_DAY_MONTH = re.compile(
    _OPTIONAL_WEEKDAY
    + rf"(\d{{1,2}})(?:st|nd|rd|th|\.)?\s+(?:of\s+)?({_MONTH})\b\.?(?:,?\s+(\d{{4}})\b)?",
    re.IGNORECASE,
)
# Alone, a weekday must be spelled out (or English's three letters): "so", "do", "mi" are words.
_WEEKDAY_WORD = "|".join(sorted((w for w in _WEEKDAYS if len(w) > 2), key=len, reverse=True))
_WEEKDAY_ONLY = re.compile(
    rf"(?:next\s+|kommenden\s+|nächsten\s+)?({_WEEKDAY_WORD})\b", re.IGNORECASE
)
_TOMORROW = re.compile(r"(tomorrow|morgen)\b", re.IGNORECASE)


def return_date(text: str, reference: date | None) -> date | None:
    """The first return date announced in `text` (see the module docstring), or None.

    `reference` is the day the answer was written or received; without it only dates that name
    their year are read."""
    scanned = text[:MAX_SCAN_CHARS]
    for trigger in _TRIGGER.finditer(scanned):
        found = _date_at(scanned, trigger.end(), reference)
        if found is not None and _plausible(found, reference):
            return found
    return None


def _plausible(found: date, reference: date | None) -> bool:
    if reference is None:
        return 2000 <= found.year <= 2100
    return reference - timedelta(days=1) <= found <= reference + timedelta(days=MAX_DAYS_AHEAD)


def _date_at(text: str, position: int, reference: date | None) -> date | None:
    window = text[position : position + 40]
    if match := _ISO.match(window):
        return _make(int(match[1]), int(match[2]), int(match[3]))
    if match := _MONTH_DAY.match(window):
        month = _MONTHS[match[1].lower()]
        return _resolve(month, int(match[2]), match[3], reference)
    if match := _DAY_MONTH.match(window):
        month = _MONTHS[match[2].lower()]
        return _resolve(month, int(match[1]), match[3], reference)
    if match := _DOTTED.match(window):
        return _resolve(int(match[2]), int(match[1]), match[3], reference)
    if match := _SLASHED.match(window):
        first, second = int(match[1]), int(match[2])
        if first > 12 >= second:
            return _resolve(second, first, match[3], reference)
        if second > 12 >= first:
            return _resolve(first, second, match[3], reference)
        if first == second:
            return _resolve(first, second, match[3], reference)
        return None  # 05/06: May 6 in the US, 5 June in Europe; guessing would be worse
    if reference is None:
        return None
    if _TOMORROW.match(window):
        return reference + timedelta(days=1)
    if match := _WEEKDAY_ONLY.match(window):
        ahead = (_WEEKDAYS[match[1].lower()] - reference.weekday() - 1) % 7 + 1
        return reference + timedelta(days=ahead)
    return None


def _resolve(month: int, day: int, year_text: str | None, reference: date | None) -> date | None:
    if year_text is not None:
        year = int(year_text)
        return _make(year + 2000 if year < 100 else year, month, day)
    if reference is None:
        return None
    found = _make(reference.year, month, day)
    if found is not None and found < reference:
        found = _make(reference.year + 1, month, day)
    return found


def _make(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None
