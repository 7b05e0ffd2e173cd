"""Lenient decoding of signal inputs: what an operator types must never drop a signal.

The SDK decodes a signal's input into the handler's declared type before the handler runs, and
*drops the signal* (with only a worker log line) when that fails: `{"note": null}` for a `str`
field, or a bare string where a dataclass is expected, used to lose a `stop` or an unsubscribe in
silence. So the operator signals take their inputs as plain JSON values (`*inputs: object`) and
this module turns whatever arrived into the handler's dataclass:

- no input, `null` or `{}` → every field at its default;
- a bare string → the signal's free-text field (`note`, or `reason` for `stop`);
- an object → known fields by their snake_case or camelCase name; `null` → the default; numbers and
  booleans → their text; anything else in a field, unknown fields and extra inputs are ignored;
- anything else (a number, a list, bytes) → defaults.

Every part that was ignored is reported as a problem, so the workflow can record it where operators
look (current details, a warning, a metric). The signal itself always applies: a `stop` whose input
is garbage still stops. Pure functions over plain values, safe inside the workflow sandbox.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_TEXT_CHARS = 1000
"""Longest text kept from an operator's input (a note, a reason, a name); the rest is cut."""


@dataclass(frozen=True)
class Decoded(Generic[T]):
    """A signal input as the handler's dataclass, and what of the raw input was ignored."""

    value: T
    problems: list[str] = field(default_factory=list)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _text(
    value: object, name: str, problems: list[str], max_chars: int = MAX_TEXT_CHARS
) -> str | None:
    """A field's value as text, or None (the default) with a problem when it is not text-like;
    cut at `max_chars`."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        problems.append(f"`{name}` is not text ({type(value).__name__}); ignored")
        return None
    if len(value) > max_chars:
        problems.append(f"`{name}` longer than {max_chars} characters; cut")
        value = value[:max_chars]
    return value


def _texts(
    value: object, name: str, problems: list[str], max_items: int, limits: Mapping[str, int]
) -> list[str] | None:
    """A list field's value as a list of texts (None: the default), each cut like `_text`."""
    if value is None:
        return None
    if not isinstance(value, list):
        problems.append(f"`{name}` is not a list ({type(value).__name__}); ignored")
        return None
    if len(value) > max_items:
        problems.append(f"`{name}` has more than {max_items} items; cut")
    items: list[str] = []
    for item in value[:max_items]:
        text = _text(item, name, problems, limits.get(name, MAX_TEXT_CHARS))
        if text is not None:
            items.append(text)
    return items


def decode(
    cls: type[T],
    inputs: tuple[object, ...],
    *,
    text_field: str,
    aliases: dict[str, str] | None = None,
    max_chars: Mapping[str, int] | None = None,
    list_fields: Mapping[str, int] | None = None,
) -> Decoded[T]:
    """Builds `cls` (a dataclass of `str` fields with defaults) from a signal's raw inputs.

    `text_field` names the field a bare string fills; `aliases` maps other accepted names (older
    or alternative spellings, e.g. `reported_by`) to field names; `max_chars` bounds fields
    (default `MAX_TEXT_CHARS`), since what a signal brings may be carried in the workflow's state.
    `list_fields` names fields that take a list of texts, with the most items kept (the rest is
    cut, a problem); anything but a list there is ignored with a problem. Never raises for any
    input.
    """
    problems: list[str] = []
    limits = max_chars or {}
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    accepted: dict[str, str] = {}
    for name in names:
        accepted[name] = name
        accepted[_camel(name)] = name
    for alias, name in (aliases or {}).items():
        accepted[alias] = name
        accepted[_camel(alias)] = name
    if len(inputs) > 1:
        problems.append(f"{len(inputs) - 1} extra input(s) ignored; a signal takes one")
    raw: object = inputs[0] if inputs else None
    values: dict[str, Any] = {}
    if isinstance(raw, str):
        text = _text(raw, text_field, problems, limits.get(text_field, MAX_TEXT_CHARS))
        if text is not None:
            values[text_field] = text
    elif isinstance(raw, dict):
        unknown = sorted(str(key) for key in raw if str(key) not in accepted)
        if unknown:
            problems.append(f"unknown field(s) ignored: {', '.join(unknown)}")
        for key, value in raw.items():
            target = accepted.get(str(key))
            if target is None:
                continue
            if target in (list_fields or {}):
                items = _texts(value, str(key), problems, (list_fields or {})[target], limits)
                if items is not None:
                    values[target] = items
                continue
            text = _text(value, str(key), problems, limits.get(target, MAX_TEXT_CHARS))
            if text is not None:
                values[target] = text
    elif raw is not None:
        problems.append(
            f"input not understood ({type(raw).__name__}): expected an object, a string or "
            "nothing; defaults used"
        )
    return Decoded(cls(**values), problems)
