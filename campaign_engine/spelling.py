"""Which of the names there are a misspelt one most likely meant: for messages that name the fix
(`lead.first_name` → `lead.firstName` in a template, `delays` → `delay` in a request body).

Pure functions over strings, `difflib` for the closest spelling; no I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

__all__ = ["likely_names"]


def _normal(name: str) -> str:
    """`name` for comparing spellings: lower case, letters and digits only (`first_name`,
    `firstName`, `FIRST-NAME` are all `firstname`)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def likely_names(name: str, candidates: Sequence[tuple[str, str, str]]) -> list[str]:
    """The candidates `name` most likely meant, best first; empty when none is close.

    `candidates` are `(shown, own name, parent's name)`: `("lead.firstName", "firstName",
    "lead")`. Tried in turn, the first rule that finds any wins: the same name but for case,
    `_` and `-` (`first_name`, `FirstName` → `firstName`), also after the parent's name
    (`lead_id` → `lead.id`); one name holding the other, at least four letters long
    (`email_address` → `email`, `name` → `firstName` and `lastName`); then the closest by
    `difflib.get_close_matches` (`frstName` → `firstName`, `unsubscribe_link` →
    `unsubscribe_url`).
    """
    wanted = _normal(name)
    if not wanted:
        return []
    normal = [(shown, _normal(own), _normal(parent)) for shown, own, parent in candidates]
    same = [
        shown
        for shown, own, parent in normal
        if own == wanted or (parent and wanted == parent + own)
    ]
    if same:
        return same
    holding = [
        shown
        for shown, own, parent in normal
        if len(own) >= 4 and len(wanted) >= 4 and (own in wanted or wanted in own)
    ]
    if holding:
        return holding
    by_name: dict[str, list[str]] = {}
    for shown, own, _ in normal:
        by_name.setdefault(own, []).append(shown)
    return [
        shown
        for close in difflib.get_close_matches(wanted, list(by_name), n=1, cutoff=0.6)
        for shown in by_name[close]
    ]
