"""Runs the HTTP examples of a Markdown page against a real API and checks the answers it shows.

The format a page must follow (issue 22, part 3; `tests/test_docs_examples.py` runs every page):

- **What runs**: every fenced ```` ```bash ```` block, and every fenced ```` ```python ```` block
  that uses `httpx` (or reads `os.environ["API"]`), top to bottom, in one `bash` session per page
  (`set -euo pipefail`, every assignment exported, so `$C`, `$W` set by one block are there for
  the next ones and for Python blocks, which run as `python` with this venv's httpx). The
  session is given `$API` (the base URL), `$KEY` (an API key with every permission in account
  group `$AG`) and `$AG`, read-only, and nothing else: a block that uses a variable no earlier
  block set, or sets one of those three, fails with the page and line. Shown-only blocks
  (`make dev`, `export API=…`, a settings file) are ```` ```sh ````, ```` ```console ````,
  ```` ```toml ```` and so on: never run. A ```` ```sh ````/```` ```shell ````/```` ```console ````
  block that mentions `$API`, or a shell block that curls `127.0.0.1:8000`/`localhost:8000`
  instead of `$API`, is refused (it would escape the test).
- **An API example** is a run block that mentions `$API` (or `${API}`), or a Python one. **Its
  expected answer** is the next fenced block on the page (prose may come between, no other fenced
  block): a ```` ```json ```` block whose title is the status, `title="201 Created"` (the number,
  then nothing or the standard reason phrase). It holds one JSON value, compared with the body of
  the **last** request the example made to `$API` (through a recording proxy, so `-o /dev/null`,
  `-w`, `-D -`, pipes into `jq` and wait loops change nothing): objects match when every field
  shown is there with a matching value (fields not shown are not checked), arrays when they have
  as many items and each matches, other values when equal (`true` is not `1`, `1` is `1.0`). A
  string that contains `…` (U+2026) matches any value, null included, but the field must be
  there. An API example without an answer, an answer that follows no API example, or a
  ```` ```bash ```` block without `$API` that makes requests fails the page. Answers must be JSON
  (an HTML or empty body fails).
- **Waiting**: a state reached asynchronously is waited for in the page itself, as a reader
  would, e.g. `until curl -sS … | jq -e '.data.leadStatus.hasPendingApproval' >/dev/null; do sleep
  0.2; done`; each block is bounded by `block_timeout` seconds here.

`run_page` raises `ExampleFailure` naming the page and line of every problem it found: the
structure first (nothing runs then), then each answer that differs (the session goes on, so one
page reports all of its differences), then the block that failed or hung (the session ends; the
message has bash's or Python's own words, what the block printed, and its last answer).
"""

from __future__ import annotations

import asyncio
import http
import json
import os
import re
import secrets
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from entrypoints.devserver import free_port

WILDCARD = "…"
"""In an expected answer, a string containing this character matches any value."""

SHELL_LANGUAGES = frozenset({"bash"})
REFUSED_SHELL_LANGUAGES = frozenset({"sh", "shell", "console", "zsh", "shell-session"})
PYTHON_LANGUAGES = frozenset({"python", "py"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_API_VARIABLE = re.compile(r"\$(?:API\b|\{API\})")
_PYTHON_API = re.compile(r"\bhttpx\b|environ\b.{0,8}[\"']API[\"']")
_LITERAL_API = re.compile(r"\bcurl\b[^\n]*(?:127\.0\.0\.1|localhost):8000\b")
_TITLE = re.compile(r"""\btitle=(?:"(?P<double>[^"]*)"|'(?P<single>[^']*)')""")
_STATUS_TITLE = re.compile(r"^(?P<code>[1-5]\d\d)(?:\s+(?P<phrase>.+?))?\s*$")


class ExampleFailure(AssertionError):
    """A page's examples do not run, or do not answer what the page shows; the message lists
    every problem as `page:line: what`."""


@dataclass(frozen=True)
class Block:
    """One fenced block: its language (first word of the info string, lower case), its title
    (`title="…"`, else None), its text (indentation of the fence removed) and the 1-based page
    line of the opening fence."""

    language: str
    title: str | None
    text: str
    line: int

    @property
    def first_line(self) -> int:
        """The page line of the block's first line of text."""
        return self.line + 1


@dataclass(frozen=True)
class Expected:
    """An expected answer: the status and the JSON value its block shows."""

    status: int
    body: Any
    line: int


@dataclass(frozen=True)
class Example:
    """A block the runner runs: an API example (`kind` "bash" or "python") and the answer the
    page shows after it, or a ```bash block that calls no API (`kind` "setup", `expected`
    None), such as one that sets `C`."""

    kind: str
    block: Block
    expected: Expected | None


@dataclass(frozen=True)
class Page:
    """A page's runnable examples in page order, and what is wrong with its structure
    (`page:line: what` each; an empty list when the examples can run)."""

    name: str
    examples: list[Example]
    problems: list[str]


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text (``` or ~~~, three or more, indented or not, as in
    admonitions and content tabs), in order. An unclosed fence runs to the end, as CommonMark
    says."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            index += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            line = lines[end]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            end += 1
        blocks.append(Block(_language(info), _title(info), "\n".join(body) + "\n", index + 1))
        index = end + 1
    return blocks


def _language(info: str) -> str:
    """The language of an info string: `bash title="…"` and `{.bash title="…"}` both give bash."""
    if info.startswith("{"):
        found = re.search(r"\.([\w+-]+)", info)
        return found[1].lower() if found else ""
    return info.split(maxsplit=1)[0].lower() if info else ""


def _title(info: str) -> str | None:
    found = _TITLE.search(info)
    if found is None:
        return None
    return found["double"] if found["double"] is not None else found["single"]


def _kind(block: Block) -> str | None:
    """`bash` or `python` for an API example, `setup` for a ```bash block that calls no API
    (it runs too: it may set a variable), `refused` for a shell block in another dialect
    that calls the API, `literal` for a shell block that curls the API's default address instead
    of `$API`, None for any other block."""
    if block.language in PYTHON_LANGUAGES and _PYTHON_API.search(block.text):
        return "python"
    if block.language in SHELL_LANGUAGES | REFUSED_SHELL_LANGUAGES and _LITERAL_API.search(
        block.text
    ):
        return "literal"
    calls_api = _API_VARIABLE.search(block.text) is not None
    if block.language in SHELL_LANGUAGES:
        return "bash" if calls_api else "setup"
    if calls_api and block.language in REFUSED_SHELL_LANGUAGES:
        return "refused"
    return None


def _expected(name: str, block: Block) -> Expected | str:
    """The expected answer a block shows, or why it is not one (`page:line: what`)."""
    where = f"{name}:{block.line}"
    if block.language != "json":
        language = block.language or "(no language)"
        return f'{where}: an answer is a ```json block with title="<status>", not ```{language}'
    status = _STATUS_TITLE.match(block.title or "")
    if status is None:
        found = repr(block.title) if block.title else "no title"
        example = 'e.g. title="201 Created"'
        return f"{where}: the answer's title must be its status, {example}; found {found}"
    code = int(status["code"])
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        return f"{where}: {code} is not an HTTP status"
    if status["phrase"] is not None and status["phrase"] != phrase:
        return f'{where}: title "{block.title}": the reason phrase of {code} is "{phrase}"'
    try:
        body = json.loads(block.text)
    except json.JSONDecodeError as error:
        line = block.first_line + error.lineno - 1
        return f"{where}: the answer is not one JSON value ({error.msg}, line {line})"
    return Expected(code, body, block.line)


def _refusal(name: str, block: Block, kind: str) -> str:
    """Why a shell block that calls the API cannot run as it is written (`page:line: what`)."""
    if kind == "literal":
        return (
            f"{name}:{block.line}: a block that curls the API's address: call it as $API "
            "(```bash), so the suite runs it, and show its answer after it"
        )
    return (
        f"{name}:{block.line}: a ```{block.language} block calls $API: write it as ```bash "
        "(so the suite runs it) and show its answer after it"
    )


def _is_answer(block: Block) -> bool:
    """Whether a block is written as an expected answer: ```json titled with a status."""
    return block.language == "json" and _STATUS_TITLE.match(block.title or "") is not None


def parse_page(name: str, text: str) -> Page:
    """The API examples of a page and the answers it shows after them (see the module's
    docstring for the format); `name` is how messages name the page."""
    blocks = fenced_blocks(text)
    examples: list[Example] = []
    problems: list[str] = []
    index = 0
    while index < len(blocks):
        block = blocks[index]
        kind = _kind(block)
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if kind in ("literal", "refused"):
            problems.append(_refusal(name, block, kind))
            if following is not None and _is_answer(following):
                index += 1  # its answer is no orphan: the block itself is the problem
        elif kind == "setup":
            examples.append(Example(kind, block, None))
        elif kind is not None:
            if following is None or _kind(following) or following.language != "json":
                problems.append(
                    f"{name}:{block.line}: an API example without its answer: the next fenced "
                    'block must be ```json title="<status>" showing the envelope'
                )
            else:
                expected = _expected(name, following)
                if isinstance(expected, str):
                    problems.append(expected)
                else:
                    examples.append(Example(kind, block, expected))
                index += 1
        elif _is_answer(block):
            problems.append(
                f"{name}:{block.line}: an answer (title {block.title!r}) that follows no API "
                "example (a ```bash block with $API, or ```python with httpx)"
            )
        index += 1
    return Page(name, examples, problems)


# --- comparing answers -----------------------------------------------------------------------


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `actual` differs from what `expected` shows, one `path: what` each (empty when it
    matches): fields shown must be present and match, fields not shown are free, arrays match
    item by item, a string containing `…` matches anything, other values must be equal and of the
    same JSON type."""
    where = path or "(the answer)"
    if isinstance(expected, str) and WILDCARD in expected:
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {_show(actual)}"]
        found: list[str] = []
        for name, value in expected.items():
            child = f"{path}.{name}" if path else name
            if name not in actual:
                found.append(f"{child}: missing (expected {_show(value)})")
            else:
                found.extend(differences(value, actual[name], child))
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected an array, got {_show(actual)}"]
        if len(expected) != len(actual):
            return [f"{where}: expected {len(expected)} items, got {len(actual)}: {_show(actual)}"]
        return [
            problem
            for position, (shown, seen) in enumerate(zip(expected, actual, strict=True))
            for problem in differences(shown, seen, f"{path}[{position}]")
        ]
    if type(expected) is not type(actual) and not (
        isinstance(expected, int | float)
        and isinstance(actual, int | float)
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
    ):
        return [f"{where}: expected {_show(expected)}, got {_show(actual)}"]
    if expected != actual:
        return [f"{where}: expected {_show(expected)}, got {_show(actual)}"]
    return []


def _show(value: Any, limit: int = 300) -> str:
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= limit else shown[:limit] + "…"


# --- the recording proxy ---------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request through the proxy and the API's answer (body decoded, bytes)."""

    method: str
    target: str
    status: int
    body: bytes


_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}
)


@dataclass
class RecordingProxy:
    """A reverse proxy on a free loopback port in front of `upstream` that records every
    exchange: what a page's examples call as `$API`. `exchanges` grows as requests come in."""

    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        """The base URL the examples get as `$API`."""
        return f"http://127.0.0.1:{self.port}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app: forwards the request as it came (method, path, query, headers, body)
        and answers with the upstream's status, headers and body."""
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        target = scope["raw_path"].decode() if scope.get("raw_path") else scope["path"]
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        async with httpx.AsyncClient(base_url=self.upstream, timeout=60) as client:
            answer = await client.request(scope["method"], target, headers=headers, content=body)
        self.exchanges.append(Exchange(scope["method"], target, answer.status_code, answer.content))
        dropped = _HOP_BY_HOP | {"content-encoding"}
        if scope["method"] == "HEAD":
            dropped -= {"content-length"}
        out = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in answer.headers.multi_items()
            if name.lower() not in dropped
        ]
        if scope["method"] != "HEAD":
            out.append((b"content-length", str(len(answer.content)).encode()))
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
        content = b"" if scope["method"] == "HEAD" else answer.content
        await send({"type": "http.response.body", "body": content})

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[RecordingProxy]:
        """Serves the proxy (uvicorn, loopback) for the `async with`; stops it after."""
        self.port = free_port()
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        try:
            yield self
        finally:
            server.should_exit = True
            await task


# --- running a page --------------------------------------------------------------------------


def _session_environment(api: str, key: str, account_group: str, home: Path) -> dict[str, str]:
    """The bash session's whole environment: the three documented names and what a shell needs
    (PATH with this venv's `python` first, so Python examples find httpx), nothing inherited."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "API": api,
        "KEY": key,
        "AG": account_group,
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


async def run_page(
    page: Page,
    proxy: RecordingProxy,
    *,
    key: str,
    account_group: str,
    workdir: Path,
    block_timeout: float = 30.0,
) -> int:
    """Runs the page's examples in one bash session against `proxy` (`$API`), `key` (`$KEY`)
    and `account_group` (`$AG`) and checks each answer; returns how many examples ran.

    Each block is written to `workdir/<page name>` padded with blank lines, so that bash's and
    Python's own messages name the page's line. Raises `ExampleFailure` listing every problem
    (`page:line: what`); `block_timeout` (seconds) bounds each block, wait loops included.
    """
    if page.problems:
        raise ExampleFailure("\n".join(page.problems))
    if not page.examples:
        return 0
    if shutil.which("jq", path=_session_environment("", "", "", workdir)["PATH"]) is None:
        raise ExampleFailure("jq is not installed: the examples pipe answers through it")
    script = workdir / page.name
    script.parent.mkdir(parents=True, exist_ok=True)
    marker = f"@@examples-{secrets.token_hex(8)}@@"
    process = await asyncio.create_subprocess_exec(
        "bash",
        "--noprofile",
        "--norc",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=workdir,
        env=_session_environment(proxy.url, key, account_group, workdir),
        start_new_session=True,
    )
    assert process.stdin and process.stdout and process.stderr
    stderr = bytearray()

    async def collect_stderr() -> None:
        assert process.stderr
        while chunk := await process.stderr.read(4096):
            stderr.extend(chunk)

    reading = asyncio.create_task(collect_stderr())
    # The ERR trap names the line and command that failed: under `set -e` bash itself says
    # nothing when a command (curl, jq) just exits non-zero.
    report = f"{marker} ${{BASH_SOURCE[0]:-?}}:$LINENO: exited $?: $BASH_COMMAND"
    # The three given names cannot be changed by a page: a block that sets them fails loudly.
    prologue = (
        "set -euo pipefail\nset -a\nreadonly API KEY AG\n"
        f'trap \'printf "%s\\n" "{report}" >&2\' ERR\n'
    )
    process.stdin.write(prologue.encode())
    problems: list[str] = []
    ran = 0
    try:
        for number, example in enumerate(page.examples):
            block = example.block
            script.write_text("\n" * block.line + block.text)
            first = len(proxy.exchanges)
            # The session reads its commands from stdin: a block must not read (eat) them.
            command = (
                f"source {_quote(page.name)} </dev/null"
                if example.kind != "python"
                else f"python {_quote(page.name)} </dev/null"
            )
            process.stdin.write(f"{command}\nprintf '\\n%s\\n' '{marker} {number}'\n".encode())
            await process.stdin.drain()
            printed: list[bytes] = []
            failure = await _await_block(process, marker, number, block_timeout, printed)
            ran += 1
            where = f"{page.name}:{block.line}"
            made = proxy.exchanges[first:]
            if failure is not None:
                await _stop(process)
                await reading
                said = _translate(stderr, marker, script, page.name)
                problems.append(f"{where}: {failure}\n{said}{_context(printed, made)}")
                break
            if example.expected is None:
                if made:
                    problems.append(f"{where}: a block without $API made requests to it")
            elif not made:
                problems.append(f"{where}: the example made no request to $API")
            else:
                problems.extend(_compare(where, example.expected, made[-1]))
    finally:
        await _stop(process)
        reading.cancel()
        with suppress(asyncio.CancelledError):
            await reading
    if problems:
        raise ExampleFailure("\n".join(problems))
    return ran


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


async def _await_block(
    process: asyncio.subprocess.Process,
    marker: str,
    number: int,
    within: float,
    printed: list[bytes],
) -> str | None:
    """Waits up to `within` seconds for the block's end marker on stdout, adding what the block
    printed before it to `printed`; None when it came, else what went wrong."""
    assert process.stdout
    expected = f"{marker} {number}".encode()
    try:
        async with asyncio.timeout(within):
            while True:
                line = await process.stdout.readline()
                if not line:
                    code = await process.wait()
                    return f"the block failed (bash exited {code})"
                if line.rstrip(b"\n") == expected:
                    return None
                printed.append(line)
    except TimeoutError:
        return f"the block did not finish within {within:g} s (a wait loop that never ends?)"


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Ends the session's bash and whatever it started (its own process group)."""
    if process.returncode is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _translate(stderr: bytearray, marker: str, script: Path, name: str) -> str:
    """The session's stderr, last lines, with the script's path shown as the page's name."""
    text = stderr.decode(errors="replace").replace(str(script), name).replace(marker, "")
    return "\n".join("    " + line for line in text.splitlines()[-15:])


def _context(printed: list[bytes], made: list[Exchange]) -> str:
    """What a failed block printed (last lines) and the last answer it got, for its message."""
    shown = b"".join(printed).decode(errors="replace").splitlines()[-5:]
    lines = [f"    printed: {line}" for line in shown if line.strip()]
    if made:
        last = made[-1]
        body = last.body.decode(errors="replace")[:500]
        lines.append(f"    last answer: {last.method} {last.target} → {last.status} {body}")
    else:
        lines.append("    no request reached $API")
    return "\n" + "\n".join(lines)


def _compare(where: str, expected: Expected, answer: Exchange) -> list[str]:
    """What differs between the shown answer and the last exchange of the block."""
    request = f"{answer.method} {answer.target}"
    found: list[str] = []
    if answer.status != expected.status:
        found.append(
            f"{where}: {request}: expected status {expected.status}, got {answer.status} "
            f"(answer at line {expected.line})"
        )
    try:
        body = json.loads(answer.body) if answer.body else None
    except json.JSONDecodeError:
        found.append(f"{where}: {request}: the answer is not JSON: {answer.body[:300]!r}")
        return found
    for difference in differences(expected.body, body):
        found.append(f"{where}: {request}: {difference} (answer at line {expected.line})")
    if found:
        found.append(f"    the whole answer: {_show(body, 2000)}")
    return found
