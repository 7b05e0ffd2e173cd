"""Message templates over a lead, rendered in Jinja2's sandbox.

Campaign authors are API callers, not trusted code: the sandbox keeps a template from reaching
Python internals, and `StrictUndefined` turns a misspelt field into an error instead of a blank.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from workflows.types import Lead

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

_SAMPLE_LEAD = Lead(
    id="000000000000000000000000",
    email="ada@example.com",
    first_name="Ada",
    last_name="Lovelace",
    company="Analytical Engines",
)


class TemplateRenderError(ValueError):
    """A template that cannot be parsed or rendered; the message says where and why."""


def lead_context(lead: Lead) -> dict[str, Any]:
    # The same camelCase names the API uses for a lead, so `{{ lead.firstName }}` reads as sent.
    return {
        "lead": {
            "id": lead.id,
            "email": lead.email,
            "firstName": lead.first_name,
            "lastName": lead.last_name,
            "company": lead.company,
        }
    }


def render(template: str, lead: Lead) -> str:
    try:
        return _env.from_string(template).render(lead_context(lead))
    except TemplateError as error:
        raise TemplateRenderError(_describe(error)) from error
    except Exception as error:
        # Expressions in a template can fail like any Python code (`{{ 1 / 0 }}`); that is the
        # template's fault, not ours.
        raise TemplateRenderError(f"{type(error).__name__}: {error}") from error


def check(template: str) -> None:
    """Raises `TemplateRenderError` unless the template parses and renders for a complete lead."""
    render(template, _SAMPLE_LEAD)


def _describe(error: TemplateError) -> str:
    line = getattr(error, "lineno", None)
    where = f" (line {line})" if line else ""
    return f"{error.message or type(error).__name__}{where}"
