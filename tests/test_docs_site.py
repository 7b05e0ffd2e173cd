"""The documentation: the site builds strictly, the README stays short and its links resolve, and
every API example on the site has the shape the example runner reads.

`mkdocs build --strict` fails on any warning: a link to a missing page or anchor, a page left out
of the nav, a generated reference part that cannot be made (docs/hooks/generate.py). It runs in a
subprocess into a temporary directory, beside the rest of the suite under xdist.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 250

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)(.*)$", re.MULTILINE)
STATUS_TITLE = re.compile(r'^json title="(\d{3}) [A-Z][\w -]*"$')


def _slug(heading: str) -> str:
    # Python-Markdown's toc slugify on the heading's text (inline code keeps its text).
    text = heading.replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(markdown: str) -> set[str]:
    anchors = set()
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence or not re.match(r"#{1,6} ", line):
            continue
        heading = line.lstrip("#").strip()
        explicit = re.search(r"\{#([\w-]+)\}\s*$", heading)
        anchors.add(explicit.group(1) if explicit else _slug(heading))
    return anchors


def _outside_code(markdown: str) -> str:
    return re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)


# About 5 s of CPU (a third of it importing the API for its OpenAPI document); on a loaded machine
# the wall time can be many times that, hence the generous bound.
@pytest.mark.timeout(300)
def test_site_builds_strictly(tmp_path: Path) -> None:
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    built = tmp_path / "site"
    # The generated parts are there: an operation, a setting, a command, a stop reason.
    assert "approvePendingCampaignContent" in (built / "reference/rest-api/index.html").read_text()
    assert "CAMPAIGN_ENGINE_STATE_DIR" in (built / "reference/settings/index.html").read_text()
    assert "campaign-engine keys create" in (built / "reference/cli/index.html").read_text()
    assert "LEAD_REPLIED" in (built / "reference/stop-reasons-and-errors/index.html").read_text()
    # Offline: no page loads a script, a stylesheet or a font from another host.
    external = re.compile(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//', re.IGNORECASE)
    for page in built.rglob("*.html"):
        assert not external.search(page.read_text()), page.relative_to(built)


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_every_local_link_of_the_readme_resolves() -> None:
    text = README.read_text()
    targets = LINK.findall(_outside_code(text))
    assert targets, "no links found: the pattern is wrong"
    broken = []
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and mailto: no network in the suite
        path, _, anchor = target.partition("#")
        file = README if not path else (ROOT / path)
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_every_api_example_is_followed_by_its_answer() -> None:
    # The runner's contract: a ```bash block that calls the API is followed at once by a
    # ```json block titled with the expected status ("201 Created").
    problems = []
    for page in sorted(DOCS.rglob("*.md")):
        fences = list(FENCE.finditer(page.read_text()))
        openings = fences[0::2]
        for index, opening in enumerate(openings):
            if opening.group(1) != "bash":
                continue
            body = page.read_text()[opening.end() : fences[2 * index + 1].start()]
            if "$API" not in body:
                continue
            following = openings[index + 1] if index + 1 < len(openings) else None
            info = (following.group(1) + following.group(2)) if following else ""
            if not STATUS_TITLE.match(info):
                line = page.read_text()[: opening.start()].count("\n") + 1
                problems.append(f"{page.relative_to(ROOT)}:{line}: next block is {info!r}")
    assert not problems, problems


def test_the_anchor_slugs_match_mkdocs() -> None:
    # The README's links into the site rely on these; Python-Markdown's toc makes the same.
    assert (
        _slug("Approve exactly what you saw: `If-Match`") == "approve-exactly-what-you-saw-if-match"
    )
    assert _anchors("## Connecting to Temporal: TLS {#connecting-to-temporal}") == {
        "connecting-to-temporal"
    }


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "hooks" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_setting_without_a_description_fails_the_build() -> None:
    generate = _generator()

    class Undocumented(BaseModel):
        documented: int = Field(default=1, description="Says what it is.")
        silent: int = 2

    with pytest.raises(ValueError, match=r"Undocumented\.silent: no description"):
        generate._fields_table(Undocumented, "CAMPAIGN_ENGINE_", {}, {}, {})
    table = generate._fields_table(Undocumented, "", {"silent": "Said by the hook."}, {}, {})
    assert "| `silent` | `int` | `2` | Said by the hook. |" in table


def test_an_unknown_generator_fails_the_build() -> None:
    generate = _generator()
    with pytest.raises(ValueError, match="no such generator"):
        generate.on_page_markdown("# Page\n\n<!-- generate: nothing -->\n", None, None, None)
    assert generate.on_page_markdown("# Page\n", None, None, None) == "# Page\n"
