"""docs/reference/troubleshooting.md covers every error code the API can answer: a code added to
`api/errors.py` without its section fails here, and so does a section of a code that is gone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import errors
from api.errors import ApiError, LeadSuppressed, WorkflowInstanceNotFound
from workflows.types import ApprovalRefusal

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "troubleshooting.md"
TEXT = PAGE.read_text()


def _classes(base: type[ApiError]) -> Iterator[type[ApiError]]:
    yield base
    for sub in base.__subclasses__():
        yield from _classes(sub)


ERROR_CLASSES = sorted(
    {kind for kind in _classes(ApiError) if kind.__module__ == errors.__name__},
    key=lambda kind: (kind.status_code, kind.code),
)
CODES = {kind.code: kind.status_code for kind in ERROR_CLASSES}
SECTIONS = re.findall(r"^### (.+)$", TEXT, flags=re.MULTILINE)


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's `toc` (MkDocs) gives a heading."""
    text = re.sub(r"[`*]", "", heading)
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_the_error_classes_are_found() -> None:
    assert {"VALIDATION_ERROR", "WORKFLOW_INSTANCE_NOT_FOUND", "RENDER_QUEUE_FULL"} <= set(CODES)
    assert len(CODES) >= 30


@pytest.mark.parametrize(("code", "status"), sorted(CODES.items()))
def test_every_code_has_a_section_under_its_status(code: str, status: int) -> None:
    assert code in SECTIONS, f"docs/reference/troubleshooting.md has no `### {code}` section"
    section = TEXT.split(f"\n### {code}\n", 1)[1].split("\n### ", 1)[0]
    assert "**Means:**" in section and "**Do:**" in section
    status_heading = TEXT[: TEXT.index(f"\n### {code}\n")].rsplit("\n## ", 1)[1]
    assert status_heading.startswith(str(status)), (code, status_heading.splitlines()[0])
    assert f"[`{code}`](#{_slug(code)})" in TEXT, f"{code} missing from the table of codes"


def test_no_section_names_a_code_that_is_gone() -> None:
    codes = [section for section in SECTIONS if re.fullmatch(r"[A-Z_]+", section)]
    assert sorted(set(codes) - set(CODES)) == []
    assert len(codes) == len(set(codes)), "a code has two sections"


def test_the_framework_s_own_statuses_are_covered() -> None:
    kind = errors.http_error(431, "Request Header Fields Too Large")
    assert kind.code == "HTTP_431"
    assert "HTTP_status" in SECTIONS
    assert "`HTTP_<status>`" in TEXT


@pytest.mark.parametrize(
    "value",
    [
        *(refusal.value for refusal in ApprovalRefusal),
        *WorkflowInstanceNotFound.HINTS,
        *(f"`{source}`" for source in LeadSuppressed.REASONS),
        "FAILED_AUTHENTICATIONS",
    ],
)
def test_every_details_value_a_program_branches_on_is_explained(value: str) -> None:
    assert value in TEXT


def test_links_are_relative_and_anchors_exist() -> None:
    anchors = {_slug(heading) for heading in re.findall(r"^#+ (.+)$", TEXT, flags=re.MULTILINE)}
    for target in re.findall(r"\]\(([^)]+)\)", TEXT):
        assert not re.match(r"[a-z]+:", target), f"absolute link {target}: use a relative one"
        path, _, anchor = target.partition("#")
        if path:
            assert (PAGE.parent / path).exists(), target
        elif anchor:
            assert anchor in anchors, target
