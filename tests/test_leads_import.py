"""`campaign-engine leads import FILE.csv` against the real API, store and Temporal dev server.

The command runs as `entrypoints.cli.main` in a thread (the API serves in the test's event
loop). No worker polls the campaigns' task queues: an import only starts workflows, and what it
enrolled is read from each workflow's start input, decrypted by the session's client.
"""

from __future__ import annotations

import asyncio
import csv
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from campaign_engine.ids import new_object_id, workflow_instance_id_for
from campaign_engine.keys import Permission
from entrypoints import cli
from entrypoints.devserver import free_port
from entrypoints.leads_import import (
    EXIT_FAILED,
    EXIT_INVALID_ROWS,
    EXIT_OK,
    EXIT_USAGE,
    derive_lead_id,
)
from entrypoints.servers import http_server, start_serving
from tests.helpers import Api, Campaign, handle_of
from workflows.types import CampaignInput, Lead


@dataclass
class Run:
    """What one `campaign-engine leads import` printed and returned."""

    code: int
    out: str
    err: str


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A CSV file as a spreadsheet exports it (CRLF line ends)."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


async def import_leads(
    capsys: pytest.CaptureFixture[str],
    api: Api,
    campaign: Campaign,
    path: Path,
    *options: str,
    key: str | None = None,
    api_url: str | None = None,
) -> Run:
    """Runs the command on `path` for the campaign (its key unless `key`), in a thread."""
    capsys.readouterr()
    argv = [
        "leads",
        "import",
        str(path),
        "--account-group",
        campaign.account_group_id,
        "--campaign",
        campaign.campaign_id,
        "--api-url",
        api_url or str(api.http.base_url),
        "--api-key",
        key or campaign.key.key,
        *options,
    ]
    code = await asyncio.to_thread(cli.main, argv)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


async def started_lead(temporal: Client, campaign: Campaign, lead_id: str) -> Lead:
    """The lead a workflow of the campaign was started with (its first event's input)."""
    instance_id = workflow_instance_id_for(campaign.account_group_id, campaign.campaign_id, lead_id)
    history = await handle_of(temporal, campaign, instance_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [given] = await temporal.data_converter.decode(started.input.payloads, [CampaignInput])
    assert isinstance(given, CampaignInput)
    return given.lead


async def enrolled_count(api: Api, campaign: Campaign) -> int:
    """The campaign's `enrolled` statistic."""
    stats = await api.http.get(f"{campaign.url}/stats", headers=campaign.auth)
    count: int = stats.json()["data"]["enrolled"]
    return count


def counts_in(out: str) -> dict[str, int]:
    """The summary's rows per outcome, by label (`enrolled`, `already enrolled`, …)."""
    return {
        match[1]: int(match[2])
        for match in re.finditer(r"^  ([a-z ]+?) +(\d+)$", out, re.MULTILINE)
    }


def report_rows(path: Path) -> list[dict[str, str]]:
    """The `--report` file's rows."""
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


async def test_usual_headers_are_found_and_other_columns_are_named_with_column(
    capsys: pytest.CaptureFixture[str],
    api: Api,
    campaign: Campaign,
    temporal: Client,
    tmp_path: Path,
) -> None:
    usual = write_csv(
        tmp_path / "usual.csv",
        ["E-mail", "First Name", "last_name", "COMPANY", "Time zone", "Notes"],
        [
            ["ada@example.com", "Ada", "Lovelace", "Analytical Engines", "Europe/London", "x"],
            [" grace@example.com ", "Grace", "Hopper", "", "", ""],
        ],
    )
    crm_id = new_object_id()
    named = write_csv(
        tmp_path / "named.csv",
        ["Work address", "Given", "Family", "Employer", "Id", "E-mail"],
        [["alan@example.com", "Alan", "Turing", "Bletchley", crm_id.upper(), "ignored@x.org"]],
    )

    first = await import_leads(capsys, api, campaign, usual)
    second = await import_leads(
        capsys,
        api,
        campaign,
        named,
        "--column",
        "email=Work address",
        "--column",
        "firstName=given",  # a header is matched ignoring case when no header has its case
        "--column",
        "lastName=Family",
        "--column",
        "company=Employer",
    )

    assert (first.code, second.code) == (EXIT_OK, EXIT_OK), (first, second)
    assert counts_in(first.out)["enrolled"] == 2
    assert counts_in(second.out)["enrolled"] == 1
    ada = await started_lead(
        temporal, campaign, derive_lead_id(campaign.account_group_id, "ada@example.com")
    )
    grace = await started_lead(
        temporal, campaign, derive_lead_id(campaign.account_group_id, "grace@example.com")
    )
    alan = await started_lead(temporal, campaign, crm_id)
    assert (ada.email, ada.first_name, ada.last_name, ada.company, ada.time_zone) == (
        "ada@example.com",
        "Ada",
        "Lovelace",
        "Analytical Engines",
        "Europe/London",
    )
    assert (grace.email, grace.company, grace.time_zone) == ("grace@example.com", "", None)
    assert (alan.id, alan.email, alan.first_name, alan.last_name, alan.company) == (
        crm_id,
        "alan@example.com",
        "Alan",
        "Turing",
        "Bletchley",
    )
    assert await enrolled_count(api, campaign) == 3


async def test_column_id_with_nothing_ignores_a_crm_id_column(
    capsys: pytest.CaptureFixture[str],
    api: Api,
    campaign: Campaign,
    temporal: Client,
    tmp_path: Path,
) -> None:
    path = write_csv(tmp_path / "crm.csv", ["Id", "Email"], [["0031x00000AbCdEAAZ", "a@x.org"]])

    run = await import_leads(capsys, api, campaign, path, "--column", "id=")

    assert run.code == EXIT_OK, run
    lead = await started_lead(
        temporal, campaign, derive_lead_id(campaign.account_group_id, "a@x.org")
    )
    assert lead.email == "a@x.org"


async def test_a_rerun_enrols_nobody_twice_and_derived_ids_are_stable(
    capsys: pytest.CaptureFixture[str], api: Api, campaign: Campaign, tmp_path: Path
) -> None:
    rows = [[f"lead{i}@example.com", f"Lead {i}"] for i in range(30)]
    path = write_csv(tmp_path / "leads.csv", ["Email", "First name"], rows)
    # The same people, addresses in other case, in another file.
    shouted = write_csv(
        tmp_path / "shouted.csv", ["EMAIL"], [[f"LEAD{i}@Example.COM"] for i in range(30)]
    )
    first_report, second_report = tmp_path / "first.csv", tmp_path / "second.csv"

    first = await import_leads(
        capsys, api, campaign, path, "--batch-size", "7", "--report", str(first_report)
    )
    second = await import_leads(capsys, api, campaign, path, "--report", str(second_report))
    third = await import_leads(capsys, api, campaign, shouted)

    assert [first.code, second.code, third.code] == [EXIT_OK] * 3, (first, second, third)
    assert "30 rows in 5 batches" in first.out
    assert counts_in(first.out)["enrolled"] == 30
    assert counts_in(second.out)["already enrolled"] == 30
    assert counts_in(second.out)["enrolled"] == 0
    assert counts_in(third.out)["already enrolled"] == 30
    once, again = report_rows(first_report), report_rows(second_report)
    assert [r["outcome"] for r in once] == ["enrolled"] * 30
    assert [r["outcome"] for r in again] == ["already_enrolled"] * 30
    assert [r["line"] for r in once] == [str(line) for line in range(2, 32)]
    assert [r["leadId"] for r in once] == [
        derive_lead_id(campaign.account_group_id, f"lead{i}@example.com") for i in range(30)
    ]
    assert [(r["leadId"], r["workflowInstanceId"]) for r in again] == [
        (r["leadId"], r["workflowInstanceId"]) for r in once
    ]
    assert await enrolled_count(api, campaign) == 30


async def test_invalid_rows_are_listed_with_their_csv_lines_and_exit_3(
    capsys: pytest.CaptureFixture[str], api: Api, campaign: Campaign, tmp_path: Path
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        "email,first name,company,time zone\r\n"  # line 1
        "ada@example.com,Ada,,\r\n"  # line 2
        "not an address,Bob,,\r\n"  # line 3
        'carl@example.com,Carl,"Two\r\nLines",\r\n'  # lines 4-5: a newline in a name
        "dora@example.com,Dora,,Mars/Olympus_Mons\r\n"  # line 6
        "\r\n"  # line 7: empty, skipped
        "ADA@example.com,Ada again,,\r\n"  # line 8: the lead of line 2
        "eve@example.com,Eve,,\r\n",  # line 9
        encoding="utf-8",
        newline="",
    )
    report = tmp_path / "report.csv"

    run = await import_leads(capsys, api, campaign, path, "--report", str(report))

    assert run.code == EXIT_INVALID_ROWS, run
    assert counts_in(run.out)["enrolled"] == 2
    assert counts_in(run.out)["invalid"] == 4
    listed = [line.strip() for line in run.out.splitlines() if line.startswith("  line ")]
    assert [line.split(":")[0:2] for line in listed] == [
        ["line 3", " email"],
        ["line 4", " company"],
        ["line 6", " timeZone"],
        ["line 8", " email"],
    ], run.out
    assert listed[3] == "line 8: email: the same lead as line 2"
    assert [(r["line"], r["outcome"], r["field"]) for r in report_rows(report)] == [
        ("2", "enrolled", ""),
        ("3", "invalid", "email"),
        ("4", "invalid", "company"),
        ("6", "invalid", "timeZone"),
        ("8", "invalid", "email"),
        ("9", "enrolled", ""),
    ]
    assert await enrolled_count(api, campaign) == 2


async def test_suppressed_rows_are_counted_and_the_run_succeeds(
    capsys: pytest.CaptureFixture[str], api: Api, campaign: Campaign, tmp_path: Path
) -> None:
    gone = derive_lead_id(campaign.account_group_id, "gone@example.org")
    answer = await api.http.post(
        f"/v1/accounts/{campaign.account_group_id}/suppressions",
        json={"leadId": gone, "email": "gone@example.org"},
        headers=campaign.auth,
    )
    assert answer.status_code == 201, answer.text
    path = write_csv(
        tmp_path / "leads.csv",
        ["email"],
        [["ada@example.com"], ["Gone@Example.org"], ["bob@example.com"]],
    )
    report = tmp_path / "report.csv"

    run = await import_leads(capsys, api, campaign, path, "--report", str(report))

    assert run.code == EXIT_OK, run
    assert counts_in(run.out)["enrolled"] == 2
    # Its address in other case: the same lead, the same address.
    assert counts_in(run.out)["suppressed"] == 1
    outcomes = [(r["outcome"], r["reason"]) for r in report_rows(report)]
    assert outcomes[1] == ("suppressed", "api")


@pytest.mark.parametrize("settings_overrides", [{"enrolment_rate_limit": "25/second"}])
async def test_a_429_is_waited_out_for_its_retry_after(
    capsys: pytest.CaptureFixture[str], api: Api, campaign: Campaign, tmp_path: Path
) -> None:
    # 20 rows a batch against 25 a second: each batch after the first is refused once.
    rows = [[f"lead{i}@example.com"] for i in range(60)]
    path = write_csv(tmp_path / "leads.csv", ["email"], rows)

    run = await import_leads(capsys, api, campaign, path, "--batch-size", "20")

    assert run.code == EXIT_OK, run
    assert counts_in(run.out)["enrolled"] == 60
    waits = [line for line in run.err.splitlines() if "rate limited" in line]
    assert waits, run.err
    assert all(line.endswith("waiting 1 s (Retry-After)") for line in waits), waits
    assert await enrolled_count(api, campaign) == 60


@pytest.mark.parametrize("settings_overrides", [{"enrolment_rate_limit": "10/minute"}])
async def test_a_batch_larger_than_the_whole_budget_stops_at_once_and_names_the_size(
    capsys: pytest.CaptureFixture[str], api: Api, campaign: Campaign, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "leads.csv", ["email"], [[f"l{i}@example.com"] for i in range(20)])

    run = await import_leads(capsys, api, campaign, path)

    assert run.code == EXIT_FAILED, run
    assert "use --batch-size 10 or less" in run.out
    assert counts_in(run.out)["not sent"] == 20
    assert "rate limited" not in run.err  # no wait: it could never pass


async def test_a_refused_batch_stops_the_run_with_the_envelopes_message(
    capsys: pytest.CaptureFixture[str], api: Api, campaign: Campaign, tmp_path: Path
) -> None:
    reader = await api.issue_key([campaign.account_group_id], [Permission.CAMPAIGNS_READ])
    path = write_csv(tmp_path / "leads.csv", ["email"], [["ada@example.com"]])
    report = tmp_path / "report.csv"

    run = await import_leads(capsys, api, campaign, path, "--report", str(report), key=reader.key)

    assert run.code == EXIT_FAILED, run
    assert "stopped: batch 1 (line 2): 403 MISSING_PERMISSION:" in run.out
    assert "run the same command again" in run.out
    assert [r["outcome"] for r in report_rows(report)] == ["not_sent"]


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        (b"name,company\r\nAda,AE\r\n", [], "has no e-mail column (its columns: 'name', "),
        (b"email;name\r\nada@example.com;Ada\r\n", [], "add --delimiter ';'"),
        (b"email,name\r\nada@example.com,Ren\xe9\r\n", [], "line 2 is not utf-8 text"),
        (b"", [], "is empty: a header row"),
        (b"email\r\nada@example.com\r\n", ["--column", "email=Mail"], "has no column 'Mail'"),
        (b"email\r\nada@example.com\r\n", ["--column", "phone=Tel"], "--column 'phone=Tel'"),
        (b"email\r\nada@example.com\r\n", ["--batch-size", "1001"], "from 1 to 1000"),
        (
            b"Id,Email\r\n0031x00000AbCdEAAZ,ada@example.com\r\n",
            [],
            "line 2: column 'Id' holds '0031x00000AbCdEAAZ', not a 24-hex lead id",
        ),
    ],
    ids=[
        "no_email_column",
        "semicolons",
        "latin1",
        "empty",
        "missing_named",
        "unknown_field",
        "batch_size",
        "foreign_ids",
    ],
)
async def test_a_bad_file_or_option_is_one_line_and_sends_nothing(
    capsys: pytest.CaptureFixture[str],
    api: Api,
    campaign: Campaign,
    tmp_path: Path,
    content: bytes,
    options: list[str],
    message: str,
) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes(content)

    run = await import_leads(capsys, api, campaign, path, *options)

    assert run.code == EXIT_USAGE, run
    assert run.out == ""
    assert len(run.err.splitlines()) == 1, run.err
    assert run.err.startswith("error: ") and message in run.err, run.err
    assert await enrolled_count(api, campaign) == 0


async def test_the_key_and_url_come_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    api: Api,
    campaign: Campaign,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_csv(tmp_path / "leads.csv", ["email"], [["ada@example.com"]])
    argv = ["leads", "import", str(path)]
    argv += ["--account-group", campaign.account_group_id, "--campaign", campaign.campaign_id]
    monkeypatch.delenv("CAMPAIGN_ENGINE_API_KEY", raising=False)
    capsys.readouterr()

    without_key = await asyncio.to_thread(cli.main, argv)
    monkeypatch.setenv("CAMPAIGN_ENGINE_API_KEY", campaign.key.key)
    monkeypatch.setenv("CAMPAIGN_ENGINE_API_URL", str(api.http.base_url))
    with_both = await asyncio.to_thread(cli.main, argv)

    captured = capsys.readouterr()
    assert (without_key, with_both) == (EXIT_USAGE, EXIT_OK), captured
    assert "error: no API key: set CAMPAIGN_ENGINE_API_KEY" in captured.err
    assert counts_in(captured.out)["enrolled"] == 1


@dataclass
class FlakyFront:
    """A reverse proxy in front of the API that answers the first POSTs itself: a 502 without
    `Retry-After`, then a 503 with `Retry-After: 0`; everything after goes through."""

    upstream: str
    answers: list[Response] = field(
        default_factory=lambda: [
            JSONResponse({"success": False, "error": {"code": "UPSTREAM_ERROR"}}, 502),
            JSONResponse(
                {"success": False, "error": {"code": "UNAVAILABLE", "message": "busy"}},
                503,
                headers={"Retry-After": "0"},
            ),
        ]
    )
    port: int = 0

    async def _forward(self, request: Request) -> Response:
        if self.answers:
            return self.answers.pop(0)
        async with httpx.AsyncClient(base_url=self.upstream, timeout=60) as http:
            answer = await http.post(
                request.url.path,
                content=await request.body(),
                headers={"Authorization": request.headers["authorization"]},
            )
        return Response(answer.content, answer.status_code, media_type="application/json")

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    @asynccontextmanager
    async def running(cls, upstream: str) -> AsyncIterator[FlakyFront]:
        """Serves on a free port until the caller is done."""
        front = cls(upstream, port=free_port())
        app = Starlette(routes=[Route("/{path:path}", front._forward, methods=["POST"])])
        server = http_server(app, host="127.0.0.1", port=front.port, embedded=True)
        task = await start_serving(server)
        try:
            yield front
        finally:
            server.should_exit = True
            await task


async def test_502_and_503_are_retried(
    capsys: pytest.CaptureFixture[str], api: Api, campaign: Campaign, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "leads.csv", ["email"], [["ada@example.com"]])
    async with FlakyFront.running(str(api.http.base_url)) as front:
        run = await import_leads(capsys, api, campaign, path, api_url=front.url)

        assert run.code == EXIT_OK, run
        assert counts_in(run.out)["enrolled"] == 1
        tries = [line for line in run.err.splitlines() if "trying again" in line]
        assert tries == [
            "batch 1 (line 2): 502 Bad Gateway: "
            '{"success":false,"error":{"code":"UPSTREAM_ERROR"}}; trying again in 1 s',
            "batch 1 (line 2): 503 UNAVAILABLE: busy; trying again in 0 s",
        ], run.err


# Workflow starts take their time on a busy dev server: the API's default RPC timeout (not the
# suite's 2 s), so a slow start is not answered `failed`.
@pytest.mark.parametrize("settings_overrides", [{"temporal_rpc_timeout_seconds": 5.0}])
@pytest.mark.parametrize(
    "count",
    [
        # One full batch and a part: 5 s on a quiet 2-core machine (309 rows a second); multi-
        # batch runs are in `make test` above.
        pytest.param(1_500, id="1500", marks=[pytest.mark.slow, pytest.mark.timeout(600)]),
        # The issue's size: 43 s on a quiet 2-core machine (233 rows a second), 86 s inside the
        # loaded suite, whose time and timing-sensitive tests it then pushes too far (measured):
        # `make test-slow` runs it.
        pytest.param(10_000, id="10000", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),
    ],
)
async def test_a_large_file_goes_in_batches_of_1000(
    capsys: pytest.CaptureFixture[str],
    api: Api,
    campaign: Campaign,
    tmp_path: Path,
    count: int,
) -> None:
    """Workflow starts only: no worker polls the campaign's task queue."""
    rows = [[f"lead{i}@example.com", f"Lead {i}", "Example"] for i in range(count)]
    path = write_csv(tmp_path / "leads.csv", ["Email", "First name", "Company"], rows)
    batches = -(-count // 1000)

    started = time.monotonic()
    run = await import_leads(capsys, api, campaign, path)
    seconds = time.monotonic() - started

    assert run.code == EXIT_OK, run
    assert f"{count} rows in {batches} batches" in run.out
    assert counts_in(run.out)["enrolled"] == count
    assert len([line for line in run.err.splitlines() if line.startswith("rows ")]) == batches
    assert await enrolled_count(api, campaign) == count
    # Reported (pytest -s), never asserted: speed goes to `make bench`.
    print(f"{count}-row import: {seconds:.1f} s, {count / seconds:.0f} rows/s")


def test_derived_ids_ignore_case_and_surrounding_space_and_differ_per_account_group() -> None:
    group, other = new_object_id(), new_object_id()
    same = {
        derive_lead_id(group, "ada@example.com"),
        derive_lead_id(group, " Ada@Example.COM\t"),
        derive_lead_id(group, "ADA@EXAMPLE.COM"),
    }
    assert len(same) == 1
    [lead_id] = same
    assert len(lead_id) == 24 and int(lead_id, 16) >= 0
    assert derive_lead_id(other, "ada@example.com") != lead_id
    assert derive_lead_id(group, "ada2@example.com") != lead_id
