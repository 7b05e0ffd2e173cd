"""`campaign-engine leads import FILE.csv`: the leads of a CSV file enrolled in a campaign through
`POST /v1/accounts/{ag}/campaigns/{c}/workflow-instances/batch`, up to 1,000 rows per request.

What a person with a spreadsheet export needs (issue 20): columns found by their usual header
names (or named with `--column FIELD=HEADER`), a progress bar, a summary with each refused row's
CSV line, and a re-run that enrols nobody twice. The command speaks HTTP to the API like any
other caller: it needs an API key with `campaigns:execute` on the account group.

Lead ids. A row's id is its id column's cell when the file has one and the cell is not empty
(24 hex characters; upper case is lowered). Otherwise it is derived from the e-mail address:
the first 24 hex digits of SHA-256 over `lead:{accountGroupId}:{address}`, the address with
surrounding space removed, in Unicode NFC and lower case (`derive_lead_id`). So a re-run, or
another file holding the same address, names the same lead, and the endpoint answers
`already_enrolled` instead of starting a second instance. (Lead ids are stored in clear in
Temporal's visibility: someone who reads them and guesses an address can check the guess. A
file with ids of its own avoids that.)

Rows the file names twice (the same lead id, given or derived) are sent once: the later lines
are answered `invalid` with the earlier line's number, whichever batch they fall in.

Exit codes: `0` every row enrolled, already enrolled or suppressed; `3` (`EXIT_INVALID_ROWS`)
some rows invalid, the others done; `1` (`EXIT_FAILED`) the run failed: the API refused a batch
(its envelope's message is printed), could not be reached, or rows still failed after retries
(rows already sent stay enrolled; run the same command again); `2` (`EXIT_USAGE`) nothing was
sent: bad options, no API key, or a file that is not readable CSV with an e-mail column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import httpx

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INVALID_ROWS = 3

MAX_BATCH_ROWS = 1000
"""The batch endpoint's limit (`api.schemas.MAX_BATCH_LEADS`)."""

FIELDS = ("id", "email", "firstName", "lastName", "company", "timeZone")
"""The lead fields a column may fill: the batch endpoint's `LeadBody`, camelCase."""

DEFAULT_HEADERS: dict[str, tuple[str, ...]] = {
    "id": ("id", "leadid"),
    "email": ("email", "emailaddress", "mail"),
    "firstName": ("firstname", "givenname", "forename"),
    "lastName": ("lastname", "surname", "familyname"),
    "company": ("company", "companyname", "organization", "organisation"),
    "timeZone": ("timezone", "tz"),
}
"""Headers a field's column is found by when `--column` does not name it, compared with case,
spaces and punctuation ignored: `E-mail`, `Email Address`, `first_name`, `First Name`,
`Time zone` all match."""

DESCRIPTION = (
    "Enrols the leads of a CSV file in a campaign through the API's batch endpoint, 1,000 rows "
    "per request, with a progress bar and a summary. Needs an API key with campaigns:execute on "
    "the account group. A lead's id is its id column's cell, else derived from its e-mail "
    "address: the first 24 hex digits of SHA-256 over 'lead:ACCOUNT_GROUP_ID:address' (the "
    "address trimmed, Unicode NFC, lower case), so a re-run enrols nobody twice and shows those "
    "rows as already enrolled. A lead the file names twice is sent once (the later line is "
    "invalid). 429s are waited out (Retry-After), 502/503/504 retried with backoff. Exit codes: "
    "0 every row enrolled, already enrolled or suppressed; 3 some rows invalid (each listed with "
    "its line, field and reason); 1 the run failed (the API refused a batch, was unreachable, or "
    "rows failed: run it again, rows already enrolled are skipped); 2 nothing sent (bad options, "
    "no key, a file that is not CSV with an e-mail column)."
)
"""The command's help text (`campaign-engine leads import --help`)."""

Outcome = Literal["enrolled", "already_enrolled", "suppressed", "invalid", "failed", "not_sent"]
OUTCOMES: tuple[Outcome, ...] = (
    "enrolled",
    "already_enrolled",
    "suppressed",
    "invalid",
    "failed",
    "not_sent",
)
"""Per-row outcomes: the endpoint's five, and `not_sent` for rows a failed run never reached."""

RETRYABLE_STATUSES = frozenset({502, 503, 504})
TRANSIENT_ATTEMPTS = 6
"""Tries of one batch through 502/503/504 answers and connection errors (backoff 1, 2, 4, 8,
16 s between them, or the answer's `Retry-After`)."""
MAX_BACKOFF_SECONDS = 30.0
RATE_LIMITED_ATTEMPTS = 30
"""Tries of one batch through consecutive `429`s, each after its `Retry-After`."""
FAILED_ROW_ROUNDS = 2
"""Extra rounds for rows answered `failed` (Temporal did not answer for them): re-posting is
safe, the endpoint enrols nobody twice."""
PRINTED_INVALID_ROWS = 200
"""Refused rows listed in the summary; `--report` has them all."""


class UsageError(Exception):
    """Nothing was sent: bad options or an unreadable file (one line, `EXIT_USAGE`)."""


class ImportFailed(Exception):
    """The run stopped: the API refused a batch or could not be reached (one line,
    `EXIT_FAILED`)."""


def _squash(header: str) -> str:
    """A header as `DEFAULT_HEADERS` compares it: lower case letters and digits only."""
    return re.sub(r"[\W_]+", "", header.casefold())


def derive_lead_id(account_group_id: str, email: str) -> str:
    """The lead id of an address in an account group: the first 24 hex digits of SHA-256 over
    `lead:{account_group_id}:{address}`, the address stripped, NFC-normalised and lower-cased
    (most mail systems ignore case; one person, one lead)."""
    address = unicodedata.normalize("NFC", email.strip()).lower()
    return hashlib.sha256(f"lead:{account_group_id}:{address}".encode()).hexdigest()[:24]


def parse_columns(specs: Sequence[str]) -> dict[str, str | None]:
    """`--column FIELD=HEADER` options as {field: header}; `FIELD=` maps the field to None (no
    column, not even a default one). `UsageError` for an unknown field or a missing `=`."""
    mapping: dict[str, str | None] = {}
    by_lower = {name.lower(): name for name in FIELDS}
    for spec in specs:
        name, equals, header = spec.partition("=")
        field_name = by_lower.get(name.strip().lower())
        if not equals or field_name is None:
            raise UsageError(
                f"--column {spec!r}: expected FIELD=HEADER, FIELD one of {', '.join(FIELDS)}"
            )
        mapping[field_name] = header.strip() or None
    return mapping


@dataclass(frozen=True)
class CsvLead:
    """One data row of the file: the line it starts on (1 = the first line of the file), the
    lead as the endpoint's `LeadBody` (camelCase; empty optional cells left out) and whether its
    id was derived from the address."""

    line: int
    lead: dict[str, str]
    id_derived: bool


@dataclass(frozen=True)
class CsvFile:
    """A read file: its leads in order, and which header each field was read from."""

    leads: list[CsvLead]
    columns: dict[str, str]


def _decode(path: Path, data: bytes, encoding: str) -> str:
    try:
        # utf-8-sig: the byte-order mark Excel writes at the start of "CSV UTF-8" is not a header.
        return data.decode("utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        byte = data[error.start]
        raise UsageError(
            f"{path}: line {line} is not {encoding} text (byte 0x{byte:02x}); save the file as "
            "CSV UTF-8, or name its encoding with --encoding"
        ) from error
    except LookupError as error:
        raise UsageError(f"--encoding {encoding!r}: no such encoding") from error


def _find_columns(
    path: Path, header: list[str], mapping: dict[str, str | None], delimiter: str
) -> dict[str, int]:
    """Column index per field: `mapping`'s headers (exact, else ignoring case), then
    `DEFAULT_HEADERS` for the fields it leaves out."""
    names = [cell.strip() for cell in header]
    listed = ", ".join(repr(name) for name in names)
    found: dict[str, int] = {}
    for field_name, wanted in mapping.items():
        if wanted is None:
            continue
        index = next((i for i, n in enumerate(names) if n == wanted), None)
        if index is None:
            index = next((i for i, n in enumerate(names) if n.lower() == wanted.lower()), None)
        if index is None:
            raise UsageError(
                f"--column {field_name}={wanted}: {path} has no column {wanted!r} "
                f"(its columns: {listed})"
            )
        found[field_name] = index
    for field_name, usual in DEFAULT_HEADERS.items():
        if field_name in mapping:
            continue
        index = next((i for i, n in enumerate(names) if _squash(n) in usual), None)
        if index is not None:
            found[field_name] = index
    if "email" not in found:
        hint = ""
        if len(names) == 1 and delimiter == "," and ";" in names[0]:
            hint = "; its columns look separated by ';': add --delimiter ';'"
        raise UsageError(
            f"{path} has no e-mail column (its columns: {listed}): name it with "
            f"--column email=HEADER{hint}"
        )
    return found


def read_csv(
    path: Path,
    account_group_id: str,
    mapping: dict[str, str | None],
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> CsvFile:
    """Reads the whole file (so a file that is not text, or has no e-mail column, sends
    nothing) into leads for the batch endpoint.

    The first non-empty record is the header. Cells are stripped of surrounding space; empty
    optional cells are left out; records with every cell empty are skipped. `UsageError` with
    one line for an unreadable file, a decoding error (with its line), a CSV error, a
    `--column` header the file lacks, no e-mail column, or an id column found by its header
    (not named with `--column`) holding a cell that is not a 24-hex id. A named id column's
    cells are sent as they are: the endpoint answers such rows `invalid`.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror or error}") from error
    text = _decode(path, data, encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    leads: list[CsvLead] = []
    columns: dict[str, int] | None = None
    end_of_previous = 0
    try:
        for record in reader:
            line = end_of_previous + 1
            end_of_previous = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if columns is None:
                columns = _find_columns(path, record, mapping, delimiter)
                header = record
                continue
            cells = {
                name: record[i].strip() if i < len(record) else "" for name, i in columns.items()
            }
            lead = {name: value for name, value in cells.items() if value and name != "id"}
            lead["email"] = cells["email"]
            given = cells.get("id", "")
            if re.fullmatch(r"[0-9A-Fa-f]{24}", given):
                given = given.lower()
            elif given and "id" not in mapping:
                # A column found by its name only (a CRM's own `Id`): not ours to send as lead
                # ids, which would refuse every row; say so before anything is sent.
                raise UsageError(
                    f"{path}: line {line}: column {header[columns['id']].strip()!r} holds "
                    f"{given!r}, not a 24-hex lead id: ignore it with --column id= (ids are "
                    "then derived from the addresses) or name the id column with --column id=HEADER"
                )
            lead["id"] = given or derive_lead_id(account_group_id, cells["email"])
            leads.append(CsvLead(line, lead, id_derived=not given))
    except csv.Error as error:
        raise UsageError(f"{path}: line {reader.line_num}: {error}") from error
    if columns is None:
        raise UsageError(f"{path} is empty: a header row naming the columns comes first")
    return CsvFile(leads, {name: header[i].strip() for name, i in columns.items()})


@dataclass
class RowResult:
    """What became of one CSV row: the endpoint's answer for it (or `not_sent`)."""

    row: CsvLead
    outcome: Outcome = "not_sent"
    workflow_instance_id: str | None = None
    field: str | None = None
    reason: str | None = None


@dataclass
class Report:
    """The run so far: one result per data row, in file order, and the batches sent."""

    results: list[RowResult]
    batches: int = 0
    started: float = field(default_factory=time.monotonic)
    error: str | None = None

    def counts(self) -> Counter[str]:
        """Rows per outcome."""
        return Counter(result.outcome for result in self.results)

    def exit_code(self) -> int:
        """`EXIT_FAILED` when the run stopped or rows failed, else `EXIT_INVALID_ROWS` when
        rows were invalid, else `EXIT_OK`."""
        counts = self.counts()
        if self.error or counts["failed"] or counts["not_sent"]:
            return EXIT_FAILED
        return EXIT_INVALID_ROWS if counts["invalid"] else EXIT_OK


class Progress(Protocol):
    """Where a run reports as it goes (`rich` bar on a terminal, plain lines elsewhere)."""

    def batch_done(self, rows: int, counts: Counter[str]) -> None:
        """A batch of `rows` rows was answered; `counts` are the run's totals so far."""

    def note(self, text: str) -> None:
        """A line about the run (a wait on a `429`, a retry)."""


class LineProgress:
    """Plain lines on `stream` (a log, a CI job): one per batch and per wait."""

    def __init__(self, total: int, stream: TextIO) -> None:
        """`total`: the data rows of the file."""
        self._total = total
        self._done = 0
        self._stream = stream

    def batch_done(self, rows: int, counts: Counter[str]) -> None:
        """`rows N/TOTAL: e enrolled, a already enrolled, s suppressed, i invalid, f failed`."""
        self._done += rows
        print(f"rows {self._done}/{self._total}: {_counts_line(counts)}", file=self._stream)
        self._stream.flush()

    def note(self, text: str) -> None:
        """The line as it is."""
        print(text, file=self._stream, flush=True)


class RichProgress:
    """A `rich` progress bar on a terminal: rows sent of the total, rate, time left, and the
    counts so far."""

    def __init__(self, total: int, stream: TextIO) -> None:
        """`total`: the data rows of the file; the bar is drawn on `stream` (stderr)."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self._console = Console(file=stream)
        self._bar = Bar(
            TextColumn("enrolling"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            console=self._console,
            transient=False,
        )
        self._task = self._bar.add_task("rows", total=total, counts="")

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._bar.stop()

    def batch_done(self, rows: int, counts: Counter[str]) -> None:
        """Advances the bar and shows the counts beside it."""
        self._bar.update(self._task, advance=rows, counts=_counts_line(counts))

    def note(self, text: str) -> None:
        """Printed above the bar."""
        self._console.print(text, markup=False, highlight=False)


@contextmanager
def progress_for(total: int, stream: TextIO) -> Iterator[Progress]:
    """A `RichProgress` when `stream` is a terminal, else `LineProgress`."""
    if stream.isatty():
        with RichProgress(total, stream) as bar:
            yield bar
    else:
        yield LineProgress(total, stream)


_LABELS = {
    "enrolled": "enrolled",
    "already_enrolled": "already enrolled",
    "suppressed": "suppressed",
    "invalid": "invalid",
    "failed": "failed",
    "not_sent": "not sent",
}


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun}es" if noun.endswith("ch") else f"{count} {noun}s"


def _counts_line(counts: Counter[str]) -> str:
    return ", ".join(
        f"{counts[outcome]} {_LABELS[outcome]}"
        for outcome in OUTCOMES
        if counts[outcome] or outcome in ("enrolled", "already_enrolled")
    )


def _message(response: httpx.Response) -> str:
    """`STATUS CODE: message (details)` from an error envelope, or the status and the start of
    the body when it is not one (a proxy's page)."""
    try:
        error = response.json()["error"]
        text = f"{response.status_code} {error['code']}: {error['message']}"
        return f"{text} ({error['details']})" if error.get("details") else text
    except (ValueError, KeyError, TypeError):
        body = " ".join(response.text.split())[:200]
        return f"{response.status_code} {response.reason_phrase}: {body}"


def _retry_after(response: httpx.Response, default: float) -> float:
    """`Retry-After` in seconds (RFC 9110 §10.2.3; the delay form, which our API sends), else
    `default`."""
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return default


class BatchPoster:
    """Posts batches to one campaign's batch endpoint, through `429`s (after `Retry-After`) and
    `502`/`503`/`504`s and connection errors (with backoff); raises `ImportFailed` for any other
    answer, with the envelope's message.

    Posting a batch again is safe (the endpoint enrols nobody twice): after a timeout whose
    request did reach the API, its rows come back `already_enrolled` rather than `enrolled`.
    """

    def __init__(
        self,
        http: httpx.Client,
        path: str,
        note: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`http` carries the base URL and the key; `path` is `/v1/accounts/…/batch`; `note`
        reports each wait."""
        self._http = http
        self._path = path
        self._note = note
        self._sleep = sleep

    def post(self, leads: list[dict[str, str]], what: str) -> list[dict[str, Any]]:
        """The `results` of a `200` for `leads`; `what` names the batch in messages (its
        lines)."""
        transient = rate_limited = 0
        while True:
            try:
                response = self._http.post(self._path, json={"leads": leads})
            except httpx.TransportError as error:
                transient += 1
                if transient >= TRANSIENT_ATTEMPTS:
                    raise ImportFailed(
                        f"{what}: the API at {self._http.base_url} did not answer "
                        f"({type(error).__name__}: {error}) after {transient} tries"
                    ) from error
                wait = min(2.0 ** (transient - 1), MAX_BACKOFF_SECONDS)
                self._note(f"{what}: {type(error).__name__}; trying again in {wait:g} s")
                self._sleep(wait)
                continue
            if response.status_code == 200:
                results: list[dict[str, Any]] = response.json()["data"]["results"]
                return results
            if response.status_code == 429:
                rate_limited += 1
                wait = _retry_after(response, 1.0)
                self._check_budget_fits(response, len(leads))
                if rate_limited >= RATE_LIMITED_ATTEMPTS:
                    raise ImportFailed(
                        f"{what}: {_message(response)}; gave up after {rate_limited} tries"
                    )
                self._note(f"{what}: rate limited; waiting {wait:g} s (Retry-After)")
                self._sleep(wait)
                continue
            if response.status_code in RETRYABLE_STATUSES:
                transient += 1
                if transient >= TRANSIENT_ATTEMPTS:
                    raise ImportFailed(
                        f"{what}: {_message(response)}; gave up after {transient} tries"
                    )
                wait = _retry_after(response, min(2.0 ** (transient - 1), MAX_BACKOFF_SECONDS))
                self._note(f"{what}: {_message(response)}; trying again in {wait:g} s")
                self._sleep(wait)
                continue
            raise ImportFailed(f"{what}: {_message(response)}")

    @staticmethod
    def _check_budget_fits(response: httpx.Response, rows: int) -> None:
        """A batch larger than the whole enrolment budget is refused however long one waits
        (the limiter counts nothing of a hit that would overspend): say so at once."""
        try:
            message = response.json()["error"]["message"]
            limit = int(response.headers["X-RateLimit-Limit"])
        except (ValueError, KeyError, TypeError):
            return
        if "Enrolment budget" in message and limit < rows:
            raise ImportFailed(
                f"{_message(response)}: a batch of {rows} rows never fits a budget of {limit}; "
                f"use --batch-size {limit} or less"
            )


def _lines(rows: Sequence[CsvLead]) -> str:
    first, last = rows[0].line, rows[-1].line
    return f"line {first}" if first == last else f"lines {first}-{last}"


def send(
    report: Report,
    poster: BatchPoster,
    progress: Progress,
    batch_size: int,
) -> None:
    """Sends every row of `report` not yet answered (duplicates of an earlier line are answered
    `invalid` here), `batch_size` at a time, then the rows answered `failed` again, at most
    `FAILED_ROW_ROUNDS` times. Fills `report` as answers come; `ImportFailed` stops it (the rows
    not reached stay `not_sent`)."""
    first_line_of: dict[str, int] = {}
    pending: list[RowResult] = []
    for result in report.results:
        row = result.row
        # Rows without an address are the endpoint's to refuse (`email`), not duplicates of
        # one another through the id an empty address derives.
        if row.id_derived and not row.lead["email"]:
            pending.append(result)
            continue
        earlier = first_line_of.setdefault(row.lead["id"], row.line)
        if earlier != row.line:
            result.outcome = "invalid"
            result.field = "email" if row.id_derived else "id"
            result.reason = f"the same lead as line {earlier}"
        else:
            pending.append(result)
    counts = report.counts()
    counts["not_sent"] = 0
    if len(pending) != len(report.results):
        progress.batch_done(len(report.results) - len(pending), counts)
    for round_number in range(FAILED_ROW_ROUNDS + 1):
        if round_number:
            pending = [r for r in report.results if r.outcome == "failed"]
            if not pending:
                return
            wait = 2.0**round_number
            progress.note(
                f"{len(pending)} rows failed (Temporal did not answer); "
                f"sending them again in {wait:g} s"
            )
            time.sleep(wait)
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            answers = poster.post(
                [r.row.lead for r in batch],
                f"batch {report.batches + 1} ({_lines([r.row for r in batch])})",
            )
            report.batches += 1
            for result, answer in zip(batch, answers, strict=True):
                result.outcome = answer["outcome"]
                result.workflow_instance_id = answer.get("workflowInstanceId")
                result.field = answer.get("field")
                result.reason = answer.get("reason")
            counts = report.counts()
            counts["not_sent"] = 0
            if round_number == 0:
                progress.batch_done(len(batch), counts)


def summary(
    report: Report, path: Path, columns: dict[str, str], *, report_path: Path | None
) -> str:
    """The text printed at the end: rows per outcome, then each invalid or failed row with its
    line, field and reason (at most `PRINTED_INVALID_ROWS`), then the run's error if any."""
    counts = report.counts()
    seconds = time.monotonic() - report.started
    mapped = ", ".join(f"{name}={header!r}" for name, header in columns.items())
    lines = [
        f"{path}: {_plural(len(report.results), 'row')} in {_plural(report.batches, 'batch')}, "
        f"{seconds:.1f} s "
        f"(columns: {mapped})",
    ]
    width = max(len(label) for label in _LABELS.values())
    for outcome in OUTCOMES:
        if counts[outcome] or outcome not in ("failed", "not_sent"):
            lines.append(f"  {_LABELS[outcome]:<{width}}  {counts[outcome]:>7}")
    refused = [r for r in report.results if r.outcome in ("invalid", "failed")]
    if refused:
        lines.append("rows to fix:" if counts["invalid"] else "rows that failed:")
    for result in refused[:PRINTED_INVALID_ROWS]:
        where = f"{result.field}: " if result.field else ""
        what = "failed, run again: " if result.outcome == "failed" else ""
        lines.append(f"  line {result.row.line}: {what}{where}{result.reason or 'refused'}")
    if len(refused) > PRINTED_INVALID_ROWS:
        more = len(refused) - PRINTED_INVALID_ROWS
        where = f"in {report_path}" if report_path else "with --report FILE.csv"
        lines.append(f"  … and {more} more ({where})")
    if report.error:
        lines.append(f"stopped: {report.error}")
        lines.append("rows already sent stay enrolled: run the same command again to send the rest")
    return "\n".join(lines)


def write_report(path: Path, report: Report) -> None:
    """Per-row outcomes as CSV: `line,leadId,email,outcome,workflowInstanceId,field,reason`."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["line", "leadId", "email", "outcome", "workflowInstanceId", "field", "reason"]
        )
        for result in report.results:
            writer.writerow(
                [
                    result.row.line,
                    result.row.lead["id"],
                    result.row.lead["email"],
                    result.outcome,
                    result.workflow_instance_id or "",
                    result.field or "",
                    result.reason or "",
                ]
            )


@dataclass(frozen=True)
class ImportOptions:
    """What `campaign-engine leads import` was told (see `entrypoints.cli`)."""

    file: Path
    account_group_id: str
    campaign_id: str
    api_url: str
    api_key: str
    columns: dict[str, str | None]
    batch_size: int = MAX_BATCH_ROWS
    report: Path | None = None
    encoding: str = "utf-8"
    delimiter: str = ","
    timeout_seconds: float = 300.0


def run(options: ImportOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Reads the file, sends it, prints the summary on `out` (default: `sys.stdout` at the
    call) and the progress on `err` (`sys.stderr`), writes the report; returns the exit code
    (module docstring). `UsageError` (nothing sent) propagates."""
    out = out or sys.stdout
    err = err or sys.stderr
    read = read_csv(
        options.file,
        options.account_group_id,
        options.columns,
        encoding=options.encoding,
        delimiter=options.delimiter,
    )
    report = Report([RowResult(row) for row in read.leads])
    path = (
        f"/v1/accounts/{options.account_group_id}/campaigns/{options.campaign_id}"
        "/workflow-instances/batch"
    )
    # Connect and write promptly; the read waits for a whole batch of workflow starts.
    timeout = httpx.Timeout(10.0, read=options.timeout_seconds)
    with (
        httpx.Client(
            base_url=options.api_url,
            headers={"Authorization": f"Bearer {options.api_key}"},
            timeout=timeout,
        ) as http,
        progress_for(len(report.results), err) as progress,
    ):
        poster = BatchPoster(http, path, progress.note)
        try:
            send(report, poster, progress, options.batch_size)
        except ImportFailed as error:
            report.error = str(error)
        except KeyboardInterrupt:
            # Ctrl-C: the summary still says what was done, and a re-run finishes it.
            report.error = "interrupted"
    if options.report is not None:
        write_report(options.report, report)
    print(summary(report, options.file, read.columns, report_path=options.report), file=out)
    return report.exit_code()
