"""IANA time zone names: which we accept, and the one canonical name each is stored and shown as.

Zone data comes from the `tzdata` package, a dependency, so it ships with us: `zoneinfo` reads
the system's zone directories first (`sysconfig`'s ``TZPATH``, or ``PYTHONTZPATH``) and falls
back to the package, so a machine without a system zone database (a slim container image) still
loads every zone, ``UTC`` included.

Canonical names
---------------
Many IANA names are *links* to another: ``Europe/Kiev`` → ``Europe/Kyiv``, ``US/Central`` →
``America/Chicago``, ``Asia/Calcutta`` → ``Asia/Kolkata``, ``UTC`` → ``Etc/UTC``. The link table
is read from the `tzdata` package's own data (``tzdata.zi``, whose ``L TARGET ALIAS`` lines are
the links zic builds), not kept by hand, so a new release of the package brings its new links.
Since the same package is installed everywhere the same lock is, every process of a deployment
maps a name the same way, whatever zone data its system has.

A name is canonical when it is a zone of ``tzdata.zi`` (``Z`` lines, e.g. ``America/Chicago``,
``Etc/GMT+5``) or is listed in ``zone.tab``, the table of each country's zones. The second rule
keeps a country's own name where IANA has merged its data into another country's zone because
their clocks agreed since 1970: ``Europe/Amsterdam`` stays ``Europe/Amsterdam`` (the data
links it to ``Europe/Brussels``), ``Atlantic/Reykjavik`` stays (linked to ``Africa/Abidjan``),
as CLDR (and so ICU and the browsers) keeps them. Every other name follows its links to one of
those.
"""

from __future__ import annotations

import functools
import importlib.resources
from zoneinfo import ZoneInfo, available_timezones

__all__ = ["NOT_ZONES", "ZoneNameError", "canonical_zone_name", "known_zone_names", "load_zone"]

NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
"""Names zoneinfo may load that are not a place's clock: the system's ``localtime`` and
``posixrules`` files, and ``Factory`` (IANA's "local time zone unknown" placeholder)."""


class ZoneNameError(ValueError):
    """A name that is not a zone this deployment can load; the message says why."""


@functools.cache
def _tzdata_text(name: str) -> str:
    """A file of the `tzdata` package's ``zoneinfo`` directory (``tzdata.zi``, ``zone.tab``)."""
    return (importlib.resources.files("tzdata") / "zoneinfo" / name).read_text("utf-8")


@functools.cache
def _link_table() -> dict[str, str]:
    """Every name that is not canonical → its canonical name (module docstring), from the
    `tzdata` package: ``Europe/Kiev`` → ``Europe/Kyiv``, ``UTC`` → ``Etc/UTC``, …"""
    zones: set[str] = set()
    links: dict[str, str] = {}
    for line in _tzdata_text("tzdata.zi").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "Z":
            zones.add(fields[1])
        elif len(fields) >= 3 and fields[0] == "L":
            links[fields[2]] = fields[1]
    country_zones = {
        line.split("\t")[2]
        for line in _tzdata_text("zone.tab").splitlines()
        if line and not line.startswith("#")
    }
    canonical = zones | country_zones
    table: dict[str, str] = {}
    for alias in links:
        if alias in canonical:
            continue
        target = links[alias]
        seen = {alias}
        # zic allows a link to a link; follow the chain to a canonical name (or its end).
        while target not in canonical and target in links and target not in seen:
            seen.add(target)
            target = links[target]
        table[alias] = target
    return table


@functools.cache
def known_zone_names() -> frozenset[str]:
    """Every name zoneinfo can load here (the system's zone directories and the `tzdata`
    package; links included), less `NOT_ZONES`. Read once per process: `available_timezones`
    walks the directories (about 0.1 s). The ``posix/`` and ``right/`` copies are not in it."""
    return frozenset(available_timezones()) - NOT_ZONES


@functools.cache
def _by_casefold() -> dict[str, str]:
    """Lower-cased name → name, to suggest the spelling of a name given in the wrong case."""
    return {name.casefold(): name for name in known_zone_names()}


def canonical_zone_name(name: str) -> str:
    """The canonical IANA name of the zone `name` (module docstring): `name` itself when it is
    canonical or unknown to the `tzdata` package, else the zone it links to."""
    return _link_table().get(name, name)


def load_zone(name: str) -> ZoneInfo:
    """The zone `name` names, under its canonical name (``load_zone("US/Central").key`` is
    ``"America/Chicago"``).

    Raises `ZoneNameError` when `name` is not a name zoneinfo knows here (names are
    case-sensitive: the message suggests the right case), is one of `NOT_ZONES`, or its zone
    cannot be loaded by this process (missing or unreadable data). Does not check the name's
    shape: callers refuse paths and whitespace first (`send_windows.parse_zone`).
    """
    if name in NOT_ZONES or name not in known_zone_names():
        suggestion = _by_casefold().get(name.casefold())
        if suggestion is not None and name not in NOT_ZONES:
            raise ZoneNameError(
                f"{name!r} is not a known IANA time zone name: names are case-sensitive "
                f"({suggestion!r})"
            )
        raise ZoneNameError(f"{name!r} is not a known IANA time zone name")
    canonical = canonical_zone_name(name)
    try:
        return ZoneInfo(canonical)
    # Zone files are data from outside: a missing, truncated or corrupt one raises whatever
    # its reader trips on (ZoneInfoNotFoundError, ValueError, OSError, `struct.error` for a
    # short TZif header). Each means the same: this process cannot load the zone.
    except Exception as error:
        raise ZoneNameError(
            f"{name!r} cannot be loaded as a time zone here ({canonical!r}): {error}"
        ) from error
