"""MkDocs hook: the reference pages that describe code are generated from the code at build time.

A page asks for a generated part with a line of its own, `<!-- generate: NAME -->`; the hook
replaces it with Markdown built from the running code, so the page and the code cannot drift:

- `openapi`: every operation and schema of `api.create_app(Settings()).openapi()`, the document
  `/openapi.json` serves (no network, no CDN: rendered to Markdown here);
- `settings`, `mailbox-settings`, `imap-settings`: the fields of `campaign_engine.settings`'s
  models, with their environment variable, type, default, bounds and description;
- `cli`: every command of `entrypoints.cli.parser()`, with its usage and arguments;
- `stop-reasons`, `workflow-statuses`, `approval-refusals`: the members of the `StrEnum`s of
  `workflows.types`, with their docstrings;
- `error-codes`: every class of `api.errors`'s hierarchy: status, `error.code`, docstring.

An unknown name, a setting without a description, or an operation without a summary fails the build
(`mkdocs build --strict` turns the logged error into a failure; the hook raises in any mode).
Imports of the project are deferred to the first page that needs them: `api` takes a few seconds.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MARKER = re.compile(r"^<!-- generate: ([a-z-]+) -->$", re.MULTILINE)

# What the settings model does not say of a field itself: its meaning where the field has no
# description, and what an unset default means. Keys must name real fields (checked).
SETTING_NOTES: dict[str, str] = {
    "temporal_address": "Temporal frontend (host:port); when set, overrides `TEMPORAL_ADDRESS` "
    "and the profile's ([Connecting to Temporal](../how-to/deploy.md#connecting-to-temporal)).",
    "temporal_namespace": "Temporal namespace; when set, overrides `TEMPORAL_NAMESPACE` and the "
    "profile's.",
    "temporal_ui_port": "Web UI port of the dev server (`dev` only).",
    "task_queue": "Task queue of workflows and activities.",
    "api_host": "Interface the API listens on.",
    "api_port": "Port the API listens on.",
    "inbound_soft_bounce_window_days": "The window of "
    "`CAMPAIGN_ENGINE_INBOUND_SOFT_BOUNCE_LIMIT`, in days.",
    "smtp_host": "The SMTP server's host.",
    "smtp_port": "The SMTP server's port.",
    "smtp_username": "SMTP user name (login only when it and the password are set).",
    "smtp_password": "SMTP password (login only when it and the user name are set).",
    "smtp_timeout_seconds": "Per SMTP command.",
    "log_level": "Log level (`DEBUG`, `INFO`, `WARNING`, `ERROR`).",
}

# Said after a field's own description: what a reader of the settings needs beyond it.
SETTING_EXTRAS: dict[str, str] = {
    "database_url": "E.g. `sqlite+aiosqlite:///var/campaign-engine.db` or "
    "`postgresql+asyncpg://user:pass@host:5432/db`: API keys, campaigns, suppressions, the "
    "delivery ledger and mailbox reservations.",
    "api_key_pepper": "Set it, the same value everywhere, when several machines share a database.",
    "sender": "It is `MAIL FROM` too. A display name that is not ASCII may be at most 45 bytes of "
    "UTF-8 (it is sent as one RFC 2047 encoded word: readers disagree about the space between "
    "two); line breaks, control characters and `=?` are refused, and every command then exits "
    "`2` naming the setting.",
    "mailboxes": "Each entry's fields, its `imap` block included, are in the tables below.",
    "unsubscribe_key": "Changing it invalidates every unsubscribe link already sent.",
}

# Defaults computed at run time, shown as the reader meets them.
SETTING_DEFAULTS: dict[str, str] = {
    "database_url": "SQLite file `var/campaign-engine.db`",
    "api_key_pepper": "generated in `var/api-key-pepper`",
    "payload_keys": "generated in `var/payload-keys`",
    "unsubscribe_key": "generated in `var/unsubscribe-key`",
    "unsubscribe_base_url": "the local API, `http://HOST:PORT` of `CAMPAIGN_ENGINE_API_HOST` "
    "and `CAMPAIGN_ENGINE_API_PORT`",
    "outbox_dir": "`var/outbox`",
    "log_format": "`json` for `api` and `worker`, `text` for `dev`",
    "worker_build_id": "package version + hash of `workflows/`",
    "payload_codec_strict": "`true` (`false` under `make dev` unless set)",
    "codec_allow_local_ui_without_key": "`false` (`true` under `make dev` unless set)",
}


# The same for the nested models of `CAMPAIGN_ENGINE_MAILBOXES`, keyed by model and field.
NESTED_NOTES: dict[str, dict[str, str]] = {
    "MailboxLimits": {
        "daily_cap": "Messages per local day of `time_zone`; unset: no cap. A send over it is "
        "deferred to the next window day with room, never failed.",
        "minimum_spacing_seconds": "At least this long between two of the mailbox's messages; a "
        "send closer than that is deferred, never failed.",
        "imap": "How to read the mailbox's incoming mail (the table below); unset: it is not read.",
    },
    "ImapSettings": {
        "username": "The login name.",
        "password": "For `LOGIN` (Gmail: an app password).",
        "folder": "The folder read (opened read-only, with `EXAMINE`).",
        "poll_interval_seconds": "Without IDLE, a NOOP every this many seconds.",
    },
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replaces each `<!-- generate: NAME -->` line of a page with its generated Markdown."""
    return MARKER.sub(lambda match: GENERATORS[_known(match.group(1))](), markdown)


def _known(name: str) -> str:
    if name not in GENERATORS:
        raise ValueError(f"<!-- generate: {name} -->: no such generator ({', '.join(GENERATORS)})")
    return name


def _cell(text: object) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _cell_with_list(text: str) -> str:
    """A table cell that keeps a description's bullet list, one item a line (`<br>`)."""
    parts = re.split(r"\n\s*[-*] ", text)
    return "<br>• ".join(_cell(part) for part in parts)


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "") if obj.__doc__ else ""


# --- OpenAPI ---------------------------------------------------------------------------------


def openapi() -> str:
    """The REST reference: operations grouped by tag, then every schema with its fields."""
    from api import create_app
    from campaign_engine.settings import Settings

    spec: dict[str, Any] = create_app(Settings()).openapi()
    lines: list[str] = []
    tags: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    heads: dict[str, str] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "head":
                heads[path] = operation["operationId"]
                continue
            tag = (operation.get("tags") or ["other"])[0]
            tags.setdefault(tag, []).append((method.upper(), path, operation))
    for tag, operations in tags.items():
        lines += [f"## {tag.capitalize()}", ""]
        for method, path, operation in operations:
            head = heads.get(path) if method == "GET" else None
            lines += _operation(method, path, operation, head)
    lines += ["## Schemas", ""]
    for name, schema in sorted(spec["components"]["schemas"].items()):
        lines += _schema(name, schema)
    return "\n".join(lines)


def _operation(method: str, path: str, op: dict[str, Any], head: str | None) -> list[str]:
    summary = op.get("summary")
    if not summary:
        raise ValueError(f"{method} {path}: the OpenAPI operation has no summary")
    out = [
        f"### {summary} {{#{op['operationId']}}}",
        "",
        f"`{method} {path}` · operation id `{op['operationId']}`"
        + (f" · also `HEAD` (`{head}`)" if head else ""),
        "",
        op.get("description", ""),
        "",
    ]
    params = op.get("parameters", [])
    if params:
        out += ["| parameter | in | required | description |", "| --- | --- | --- | --- |"]
        for p in params:
            out.append(
                f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                f"{_cell(p.get('description', ''))} |"
            )
        out.append("")
    body = op.get("requestBody")
    if body:
        types = ", ".join(
            f"`{media}` {_type(content.get('schema', {}))}"
            for media, content in body.get("content", {}).items()
        )
        out += [f"Request body: {types}", ""]
        for content in body.get("content", {}).values():
            out += _examples("Request", content)
    out += ["| status | meaning | body |", "| --- | --- | --- |"]
    for status, response in sorted(op.get("responses", {}).items()):
        content = response.get("content", {}).get("application/json", {})
        out.append(
            f"| {status} | {_cell_with_list(response.get('description', ''))} | "
            f"{_type(content['schema']) if 'schema' in content else ''} |"
        )
    out.append("")
    for status, response in sorted(op.get("responses", {}).items()):
        out += _examples(status, response.get("content", {}).get("application/json", {}))
    return out


def _examples(label: str, content: dict[str, Any]) -> list[str]:
    """The examples of one media type of a request or response, as titled JSON blocks."""
    examples = content.get("examples") or (
        {"example": {"value": content["example"]}} if "example" in content else {}
    )
    out = []
    for name, example in examples.items():
        title = f"Example, {label}: {example.get('summary', name)}".replace('"', "'")
        value = json.dumps(example.get("value"), indent=2, ensure_ascii=False)
        out += [f'```json title="{title}"', value, "```", ""]
    return out


def _anchor(name: str) -> str:
    return "schema-" + name.lower()


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#{_anchor(name)})"
    if "anyOf" in schema or "oneOf" in schema:
        options = [s for s in schema.get("anyOf", schema.get("oneOf", []))]
        return " or ".join(_type(s) for s in options)
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and schema["additionalProperties"]:
        extra = schema["additionalProperties"]
        return f"map of {_type(extra) if isinstance(extra, dict) else 'any'}"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def _bounds(schema: dict[str, Any]) -> str:
    names = {
        "minLength": "≥ {} characters",
        "maxLength": "≤ {} characters",
        "minimum": "≥ {}",
        "maximum": "≤ {}",
        "exclusiveMinimum": "> {}",
        "exclusiveMaximum": "< {}",
        "minItems": "≥ {} items",
        "maxItems": "≤ {} items",
        "pattern": "matches `{}`",
    }
    return "; ".join(text.format(schema[key]) for key, text in names.items() if key in schema)


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f"### {name} {{#{_anchor(name)}}}", "", schema.get("description", ""), ""]
    if "enum" in schema:
        out += ["One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".", ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        out += ["| field | type | required | description |", "| --- | --- | --- | --- |"]
        for field, prop in properties.items():
            description = prop.get("description", "")
            bounds = _bounds(prop)
            example = prop.get("examples", [prop["example"]] if "example" in prop else [])
            extra = (f" ({bounds})" if bounds else "") + (
                f" Example: `{json.dumps(example[0], ensure_ascii=False)}`." if example else ""
            )
            out.append(
                f"| `{field}` | {_type(prop)} | {'yes' if field in required else 'no'} | "
                f"{_cell(description + extra)} |"
            )
        out.append("")
    return out


# --- Settings --------------------------------------------------------------------------------


def settings() -> str:
    """The `Settings` fields: variable, type, default, bounds, meaning."""
    from campaign_engine.settings import Settings

    unknown = set(SETTING_NOTES) - set(Settings.model_fields)
    unknown |= set(SETTING_DEFAULTS) - set(Settings.model_fields)
    unknown |= set(SETTING_EXTRAS) - set(Settings.model_fields)
    if unknown:
        raise ValueError(f"docs/hooks/generate.py names settings that do not exist: {unknown}")
    return _fields_table(
        Settings, "CAMPAIGN_ENGINE_", SETTING_NOTES, SETTING_DEFAULTS, SETTING_EXTRAS
    )


def mailbox_settings() -> str:
    """The fields of one entry of `CAMPAIGN_ENGINE_MAILBOXES`."""
    from campaign_engine.settings import MailboxLimits

    return _fields_table(MailboxLimits, "", _field_notes(MailboxLimits), {}, {})


def imap_settings() -> str:
    """The fields of a mailbox's `imap` block."""
    from campaign_engine.settings import ImapSettings

    return _fields_table(ImapSettings, "", _field_notes(ImapSettings), {}, {})


def _field_notes(model: type[BaseModel]) -> dict[str, str]:
    notes = NESTED_NOTES[model.__name__]
    unknown = set(notes) - set(model.model_fields)
    if unknown:
        raise ValueError(
            f"docs/hooks/generate.py names {model.__name__} fields that do not exist: {unknown}"
        )
    return notes


def _fields_table(
    model: type[BaseModel],
    prefix: str,
    notes: dict[str, str],
    defaults: dict[str, str],
    extras: dict[str, str],
) -> str:
    rows = []
    for name, info in model.model_fields.items():
        meaning = info.description or notes.get(name, "")
        if not meaning:
            raise ValueError(f"{model.__name__}.{name}: no description and no note in the hook")
        if name in extras:
            meaning += " " + extras[name]
        bounds = _field_bounds(info)
        rows.append(
            (
                f"{prefix}{name.upper()}" if prefix else name,
                _annotation(info),
                defaults.get(name) or _default(info),
                meaning + (f" Accepted: {bounds}." if bounds else ""),
            )
        )
    if prefix:
        # The top-level settings: a heading each, so that a page can link to one.
        return "\n".join(
            f"### `{label}` {{#{label.lower()}}}\n\n{kind}, default {default}.\n\n"
            f"{' '.join(meaning.split())}\n"
            for label, kind, default, meaning in rows
        )
    lines = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for label, kind, default, meaning in rows:
        lines.append(f"| `{label}` | {_cell(kind)} | {_cell(default)} | {_cell(meaning)} |")
    return "\n".join(lines)


def _annotation(info: FieldInfo) -> str:
    text = str(info.annotation)
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    text = re.sub(r"\b(?:[a-z_]+\.)+", "", text)
    text = text.replace("NoneType", "None").replace("Annotated[", "").replace(", NoDecode]", "")
    return f"`{text}`"


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined:
        if info.default_factory is not None:
            value = info.default_factory()  # type: ignore[call-arg]
            return f"`{value!r}`" if value else "none"
        return "required"
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    shown = getattr(value, "get_secret_value", None)
    return f"`{shown() if shown else value}`"


def _field_bounds(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, text in (
            ("ge", "≥ {}"),
            ("gt", "> {}"),
            ("le", "≤ {}"),
            ("lt", "< {}"),
            ("min_length", "≥ {} characters"),
            ("max_length", "≤ {} characters"),
        ):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(text.format(value))
    return ", ".join(parts)


# --- CLI -------------------------------------------------------------------------------------


def cli() -> str:
    """Every `campaign-engine` command, from the parser the program runs."""
    from entrypoints.cli import parser

    lines: list[str] = []
    for words, command, help_text in _commands(parser(), []):
        if not words:
            continue
        lines += [f"### `campaign-engine {' '.join(words)}`", "", help_text or "", ""]
        description = command.description
        if description and description != help_text:
            lines += [inspect.cleandoc(description), ""]
        usage = " ".join(command.format_usage().split())
        lines += ["```text", usage.removeprefix("usage: "), "```", ""]
        arguments = [
            action
            for action in command._actions
            if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        ]
        if arguments:
            lines += ["| argument | meaning |", "| --- | --- |"]
            for action in arguments:
                name = ", ".join(action.option_strings) or action.dest
                meaning = [action.help or ""]
                if action.choices:
                    meaning.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
                if action.required and action.option_strings:
                    meaning.append("required")
                if action.default not in (None, False, argparse.SUPPRESS):
                    meaning.append(f"default `{action.default}`")
                lines.append(f"| `{name}` | {_cell('; '.join(m for m in meaning if m))} |")
            lines.append("")
    return "\n".join(lines)


def _commands(
    command: argparse.ArgumentParser, words: list[str], help_text: str = ""
) -> Iterable[tuple[list[str], argparse.ArgumentParser, str]]:
    yield words, command, help_text
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield from _commands(sub, [*words, name], helps.get(name, ""))


# --- Enums and errors ------------------------------------------------------------------------


def _enum_table(enum_class: type[enum.StrEnum], header: str) -> str:
    from workflows import types

    source = inspect.getsource(types)
    lines = [f"| {header} | meaning |", "| --- | --- |"]
    for member in enum_class:
        # Member docstrings are attribute docstrings: read them from the source, as griffe does.
        found = re.search(
            rf'    {member.name} = "{member.value}"\n    """(.*?)"""', source, re.DOTALL
        )
        meaning = found.group(1) if found else ""
        if not meaning:
            raise ValueError(f"{enum_class.__name__}.{member.name} has no docstring")
        lines.append(f"| `{member.value}` | {_cell(meaning)} |")
    return "\n".join(lines)


def stop_reasons() -> str:
    """`workflowStopReason`'s values."""
    from workflows.types import StopReason

    return _enum_table(StopReason, "`workflowStopReason`")


def workflow_statuses() -> str:
    """`workflowStatus`'s values."""
    from workflows.types import WorkflowStatus

    return _enum_table(WorkflowStatus, "`workflowStatus`")


def approval_refusals() -> str:
    """The `details` of a `409 NO_PENDING_APPROVAL`."""
    from workflows.types import ApprovalRefusal

    return _enum_table(ApprovalRefusal, "`details`")


def error_codes() -> str:
    """Every `ApiError` class: status, code, when."""
    from api import errors

    rows: dict[str, tuple[int, str, str]] = {}

    def walk(cls: type[errors.ApiError]) -> None:
        if cls.code not in rows or cls.__module__ == errors.__name__:
            rows.setdefault(cls.code, (cls.status_code, cls.__name__, _doc(cls)))
        for sub in cls.__subclasses__():
            walk(sub)

    walk(errors.ApiError)
    lines = ["| status | `error.code` | class | when |", "| --- | --- | --- | --- |"]
    for code, (status, name, doc) in sorted(rows.items(), key=lambda row: (row[1][0], row[0])):
        lines.append(f"| {status} | `{code}` | `{name}` | {_cell(doc)} |")
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[], str]] = {
    "openapi": openapi,
    "settings": settings,
    "mailbox-settings": mailbox_settings,
    "imap-settings": imap_settings,
    "cli": cli,
    "stop-reasons": stop_reasons,
    "workflow-statuses": workflow_statuses,
    "approval-refusals": approval_refusals,
    "error-codes": error_codes,
}
