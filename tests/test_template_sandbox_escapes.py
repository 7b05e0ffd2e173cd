"""The template sandbox refuses Jinja2's published sandbox escapes, whatever Jinja2 is installed.

- CVE-2025-27516 (GHSA-cpwx-vrp4-4pq7, fixed in 3.1.6): the `|attr` filter fetched `str.format`
  past the sandbox's attribute hook, and `"{0.__init__.__globals__…}"|attr("format")(x)` read
  any module global — the process environment included.
- CVE-2024-56326 (GHSA-q2x7-8rv6-6q7h, fixed in 3.1.5): a reference to a string's `format`
  method, stored and called later, was not recognised as `str.format`.
- CVE-2024-56201 (GHSA-gmj6-6f8f-6699, fixed in 3.1.5): a template name with f-string syntax
  ran code at compile time, when an author controls the name and an import that fails.

Our sandbox (`activities/sandbox.py`) closes each itself: calls of a raw `str.format` go through
the sandboxed formatter, our `attr` filter goes through the sandbox's rules, and templates have
no name and nothing to import. So the same payloads are run in this process (the locked Jinja)
and in subprocesses importing Jinja 3.1.4 and 3.1.5, which are open to them (the wheels come
from the package index; the test checks that the old version is the one imported).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jinja2
import pytest

from activities.sandbox import TemplateRenderError, render_source

ROOT = Path(__file__).resolve().parent.parent
SECRET_VARIABLE = "CE_SANDBOX_ESCAPE_CANARY"
SECRET = "canary-7f3e9b1c-not-for-templates"

_GLOBALS = "{0.__init__.__globals__[os].environ[" + SECRET_VARIABLE + "]}"
_GLOBALS_NAMED = "{x.__init__.__globals__[os].environ[" + SECRET_VARIABLE + "]}"

PAYLOADS: dict[str, str] = {
    # CVE-2025-27516: `|attr` hands out `str.format`, called at once or later.
    "attr-format": '{{ "' + _GLOBALS + '"|attr("format")(cycler) }}',
    "attr-format-stored": '{% set f = "' + _GLOBALS + '"|attr("format") %}{{ f(cycler) }}',
    "attr-format-map": '{{ "' + _GLOBALS_NAMED + '"|attr("format_map")({"x": cycler}) }}',
    "attr-format-on-joiner": '{{ "' + _GLOBALS + '"|attr("format")(joiner) }}',
    "attr-format-through-map": (
        '{% for f in ["' + _GLOBALS + '"]|map("attr", "format") %}{{ f(namespace) }}{% endfor %}'
    ),
    # CVE-2024-56326: a stored reference to `format`, called indirectly.
    "stored-format": '{% set f = "' + _GLOBALS + '".format %}{{ f(cycler) }}',
    "stored-format-in-dict": (
        '{% set d = {"f": "' + _GLOBALS + '".format} %}{{ d.f(cycler) }}{{ d["f"](cycler) }}'
    ),
    "format-through-map-attribute": (
        '{% for f in ["' + _GLOBALS + '"]|map(attribute="format") %}{{ f(cycler) }}{% endfor %}'
    ),
    "format-in-macro-argument": (
        '{% macro m(f) %}{{ f(cycler) }}{% endmacro %}{{ m("' + _GLOBALS + '".format) }}'
    ),
    # The direct forms every version refuses: still refused.
    "direct-format": '{{ "' + _GLOBALS + '".format(cycler) }}',
    "direct-format-map": '{{ "' + _GLOBALS_NAMED + '".format_map({"x": cycler}) }}',
    "format-filter": '{{ "%s"|format(cycler.__init__.__globals__) }}',
    # CVE-2024-56201: f-string syntax where a template name goes into compiled code; our
    # templates have no name and no loader, so the import is refused before anything compiles
    # around a name.
    "import-with-fstring-name": (
        "{% from \"{__import__('os').environ['" + SECRET_VARIABLE + "']}\" import x %}{{ x }}"
    ),
    "include-with-fstring-name": (
        "{% include \"{__import__('os').environ['" + SECRET_VARIABLE + "']}\" %}"
    ),
}

# Run in a subprocess under another Jinja: each payload's outcome as JSON.
_RUNNER = """
import json, os, sys
import jinja2
from activities.sandbox import TemplateRenderError, render_source
payloads = json.loads(sys.stdin.read())
outcomes = {}
for name, template in payloads.items():
    try:
        outcomes[name] = {"rendered": render_source(template, {}, limit=10000, seconds=3)}
    except TemplateRenderError as error:
        outcomes[name] = {"refused": str(error)}
print(json.dumps({"jinja2": jinja2.__version__, "outcomes": outcomes}))
"""


def _outcome(template: str) -> dict[str, str]:
    try:
        return {"rendered": render_source(template, {}, limit=10_000, seconds=3)}
    except TemplateRenderError as error:
        return {"refused": str(error)}


def _assert_nothing_escaped(outcomes: dict[str, dict[str, str]]) -> None:
    assert set(outcomes) == set(PAYLOADS)
    leaked = {name: outcome for name, outcome in outcomes.items() if SECRET in json.dumps(outcome)}
    assert leaked == {}
    # Not only "no canary": every payload that reaches a module's globals is refused outright.
    rendered = {name: outcome for name, outcome in outcomes.items() if "rendered" in outcome}
    assert rendered == {}


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret in this process's environment, as the API's and the worker's hold keys."""
    monkeypatch.setenv(SECRET_VARIABLE, SECRET)


@pytest.mark.usefixtures("canary")
def test_installed_jinja_refuses_every_published_escape() -> None:
    outcomes = {name: _outcome(template) for name, template in PAYLOADS.items()}

    _assert_nothing_escaped(outcomes)
    assert "unsafe" in outcomes["attr-format"]["refused"]


def test_a_safe_attr_and_format_still_work() -> None:
    """The fixes refuse internals, not the features: `|attr` and `format` on ordinary values."""
    template = (
        '{{ "Hi {0}, {1}"|attr("format")("Ada", 3) }} '
        '{{ "{x}!"|attr("format_map")({"x": "ok"}) }} '
        '{% set f = "{0:>3}".format %}{{ f(7) }} {{ "%s"|format("done") }}'
    )

    assert render_source(template, {}, limit=1000, seconds=3) == "Hi Ada, 3 ok!   7 done"


def _old_jinja(version: str) -> Path:
    """Jinja `version` unpacked under var/test-cache (kept between runs), from the index pip
    is configured with; skips (fails under CI) when it cannot be had."""
    target = ROOT / "var" / "test-cache" / f"jinja2-{version}"
    if (target / "jinja2" / "__init__.py").exists():
        return target
    wheels = target.with_name(f"jinja2-{version}-wheel")
    download = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            str(wheels),
            f"jinja2=={version}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = sorted(wheels.glob(f"jinja2-{version}-*.whl"))
    if download.returncode != 0 or not found:
        message = f"could not download Jinja2 {version}: {download.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Unpacked beside, then renamed: an interrupted run never leaves half a Jinja behind.
    unpacking = target.with_name(f"{target.name}.{os.getpid()}.partial")
    with zipfile.ZipFile(found[0]) as wheel:
        wheel.extractall(unpacking)
    unpacking.rename(target)
    return target


@pytest.mark.parametrize("version", ["3.1.4", "3.1.5"])
def test_jinja_open_to_the_escapes_is_held_by_our_sandbox(version: str) -> None:
    jinja = _old_jinja(version)
    environment = {
        **os.environ,
        SECRET_VARIABLE: SECRET,
        # The old Jinja first, then the project; markupsafe from this venv.
        "PYTHONPATH": os.pathsep.join([str(jinja), str(ROOT)]),
    }
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(PAYLOADS),
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["jinja2"] == version
    _assert_nothing_escaped(report["outcomes"])


def test_the_installed_jinja_is_not_one_with_a_known_escape() -> None:
    """pyproject.toml asks for 3.1.6 or later: the version that fixed the last of the three."""
    installed = tuple(int(part) for part in jinja2.__version__.split(".")[:3])

    assert installed >= (3, 1, 6)
