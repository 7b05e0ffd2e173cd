"""`campaign-engine dev`: the whole system on one machine, plus a lead waiting at its gate."""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import urllib.parse
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from temporalio.client import Client
from temporalio.service import RPCError

from activities.templates import render_pool_held
from campaign_engine import observability
from campaign_engine.ids import message_id_for, new_object_id, workflow_id_for
from campaign_engine.keys import KeyRing, Permission, load_pepper
from campaign_engine.private_files import write_private
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import TemporalConnection, connect
from campaign_engine.webhook_secrets import WebhookSecrets
from entrypoints.devserver import DevServer
from entrypoints.servers import api_server, bind_api_socket, start_serving
from worker import build_worker, versioning
from worker.gauges import reporting_open_gates

logger = logging.getLogger("campaign_engine.dev")

DEMO_ACCOUNT_GROUP_ID = "64d0000000000000000000a1"
DEMO_CAMPAIGN_ID = "64d0000000000000000000c1"
DEMO_KEY_NAME = "dev demo"
DEMO_WINDOW = {
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "start": "08:00",
    "end": "20:00",
}
"""The demo's send window: every day 08:00 to 20:00 in each lead's own time zone."""
DEMO_ZONES = (
    "Pacific/Honolulu",
    "America/Los_Angeles",
    "America/New_York",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
"""Spread round the globe, so at any hour one is inside `DEMO_WINDOW` and one outside."""
DEMO_CAMPAIGN: dict[str, Any] = {
    "name": "Demo outreach",
    "approvalTimeout": "P7D",
    "sendWindow": {"timeZone": "UTC", **DEMO_WINDOW},
    "steps": [
        {
            "id": "intro",
            "subject": "Hello {{ lead.firstName }} from the campaign engine",
            "body": "Hi {{ lead.firstName }},\n\nA short note for {{ lead.company }}.\n",
            "requiresApproval": True,
            "delay": "PT2M",
        },
        {
            "id": "follow-up",
            "subject": "Following up, {{ lead.firstName }}",
            "body": "Hi {{ lead.firstName }}, just checking in.\n",
            "requiresApproval": True,
            "delay": "P1D",
        },
        {
            "id": "breakup",
            "subject": "Closing the loop",
            "body": "Hi {{ lead.firstName }}, I will not write again.\n",
            "requiresApproval": False,
        },
    ],
}


def demo_zones(now: datetime) -> tuple[str, str]:
    """(a zone where `DEMO_WINDOW` is open at `now`, one where it is closed): the demo enrols a
    lead in each, so one approval is sent at once and the other waits for its morning."""

    def hour(zone: str) -> float:
        local = now.astimezone(ZoneInfo(zone))
        return local.hour + local.minute / 60

    # Inside the window and far from its edges; and deep in the night.
    open_zone = min(DEMO_ZONES, key=lambda zone: abs(hour(zone) - 14))
    closed_zone = min(DEMO_ZONES, key=lambda zone: abs((hour(zone) + 12) % 24 - 14))
    return open_zone, closed_zone


def dev_settings(settings: Settings) -> Settings:
    """`make dev`'s settings: the dev server's own Web UI may use the codec endpoints without a
    key (it is on this machine and sends none), so a newcomer sees drafts decrypted in it —
    unless `CAMPAIGN_ENGINE_CODEC_ALLOW_LOCAL_UI_WITHOUT_KEY` was set, `false` included, which
    is honoured; the one worker makes its build current, whatever build the last `make dev`
    left current (a change to workflow code is a new build id, and the old build's worker is
    gone). The strict payload codec is off unless `CAMPAIGN_ENGINE_PAYLOAD_CODEC_STRICT` is set,
    so the README's plaintext `temporal workflow start`/`signal` experiments work on one's own
    machine."""
    update: dict[str, object] = {"worker_become_current": "always"}
    # Only defaults are changed: a value the operator gave (from the environment or the
    # constructor, either way in `model_fields_set`) stands.
    if "codec_allow_local_ui_without_key" not in settings.model_fields_set:
        update["codec_allow_local_ui_without_key"] = True
    if "payload_codec_strict" not in settings.model_fields_set:
        update["payload_codec_strict"] = False
    return settings.model_copy(update=update)


def codec_endpoint(settings: Settings) -> str:
    """The API's codec endpoint as the browser showing the UI reaches it."""
    host = "127.0.0.1" if settings.api_host in {"0.0.0.0", "::"} else settings.api_host
    return f"http://{host}:{settings.api_port}/codec"


def temporal_ui_base(settings: Settings) -> str:
    """The dev server's Web UI as the browser on this machine reaches it, e.g.
    `http://127.0.0.1:8233`."""
    return f"http://{settings.temporal_address.rpartition(':')[0]}:{settings.temporal_ui_port}"


def workflow_ui_url(ui_base: str, namespace: str, workflow_id: str) -> str:
    """The Web UI's page of a workflow's latest run, from its id alone:
    `<ui_base>/namespaces/<namespace>/workflows/<workflow id>` (Temporal UI 2.x routes it to
    `…/<run id>/timeline`; a trailing slash is a 404). Both parts are percent-encoded: our
    workflow ids hold colons (tests/test_codec_ui.py opens this URL in Chromium)."""
    namespace_part, workflow_part = (
        urllib.parse.quote(part, safe="") for part in (namespace, workflow_id)
    )
    return f"{ui_base}/namespaces/{namespace_part}/workflows/{workflow_part}"


async def run(settings: Settings) -> int:
    """Runs Temporal's dev server, the worker and the API until SIGINT/SIGTERM; seeds the demo.

    Stops in order: the API, then the worker, then Temporal. Returns the process exit code.
    """
    settings = dev_settings(settings)
    host, _, port = settings.temporal_address.rpartition(":")
    server = DevServer(
        host=host,
        port=int(port),
        ui_port=settings.temporal_ui_port,
        db_file=settings.state_dir / "temporal.db",
        namespace=settings.temporal_namespace,
        log_file=settings.state_dir / "temporal.log",
        ui_codec_endpoint=codec_endpoint(settings),
        port_setting="CAMPAIGN_ENGINE_TEMPORAL_ADDRESS",
        ui_port_setting="CAMPAIGN_ENGINE_TEMPORAL_UI_PORT",
    )
    # The API's port is bound and Temporal's checked (`DevServer.start`) before anything starts,
    # so a taken one (another `make dev`) is `PortInUse` naming its setting — exit 2 — with
    # nothing left to stop.
    listening = bind_api_socket(settings)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
    except BaseException:
        listening.close()
        raise
    logger.info(
        "Temporal dev server at %s, Web UI http://%s:%s",
        server.address,
        host,
        settings.temporal_ui_port,
    )
    try:
        observability.serve_api_metrics(settings.metrics_host, settings.api_metrics_port)
        runtime = observability.worker_runtime(settings.metrics_host, settings.worker_metrics_port)
        # Its own dev server, whatever TEMPORAL_* the shell has set (plain, no TLS, no key).
        client = await connect(
            settings, runtime=runtime, connection=TemporalConnection.plain(settings)
        )
        store = await Store.open(
            settings.resolved_database_url, webhook_secrets=WebhookSecrets.for_settings(settings)
        )
        api = api_server(settings, temporal=client, embedded=True)
        # Held across the API's lifespan and the worker's: the worker may still draft after
        # the API has stopped.
        with render_pool_held():
            async with (
                build_worker(client, settings, store),
                reporting_open_gates(client, settings.task_queue),
            ):
                try:
                    api_task = await start_serving(api, sockets=[listening])
                except RuntimeError:
                    logger.exception("the API did not start")
                    return 1
                try:
                    await _seed_demo(settings)
                except Exception:
                    logger.exception("could not set up the demo; the system keeps running")
                await _prune_versions(client, settings)
                await stop.wait()
                logger.info("stopping: API, then worker, then Temporal")
                api.should_exit = True
                await api_task
        await store.close()
    finally:
        listening.close()  # uvicorn closes it once it served; closing twice is harmless
        await server.stop()
    return 0


async def _prune_versions(client: Client, settings: Settings) -> None:
    """Deletes the builds earlier `make dev` runs left in `var/temporal.db` once Temporal lets
    them go (`worker.versioning.prune`): a deployment holds at most 100 versions, and every
    change to workflow code is one more. Failures are logged, never fatal."""
    try:
        deleted = await versioning.prune(client, settings.worker_deployment_name)
    except RPCError as error:
        logger.warning("could not prune old worker builds: %s", error)
        return
    if deleted:
        logger.info("deleted old worker builds of earlier runs: %s", ", ".join(deleted))


def write_demo_reply(settings: Settings, instance_url: str) -> Path:
    """Writes `STATE_DIR/demo-reply.eml`: Katherine's reply to the demo's step `intro`, threaded on
    its Message-ID (before the step is sent it still matches, by her address); returns its
    path."""
    account_group_id, campaign_id, instance_id = instance_url.split("/")[-5::2]
    sent = message_id_for(workflow_id_for(account_group_id, campaign_id, instance_id), "intro")
    path = settings.state_dir / "demo-reply.eml"
    write_private(
        path,
        (
            "From: Katherine Johnson <katherine@example.com>\r\n"
            f"To: {settings.sender}\r\n"
            "Subject: Re: Hello Katherine from the campaign engine\r\n"
            f"Message-ID: <{uuid.uuid4()}@example.com>\r\n"
            f"In-Reply-To: {sent}\r\nReferences: {sent}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            "Thanks! Could we talk on Thursday afternoon?\r\n\r\n"
            "On Monday, Campaign Engine wrote:\r\n> Hi Katherine\r\n"
        ).encode(),
    )
    return path


async def _seed_demo(settings: Settings) -> None:
    store = await Store.open(settings.resolved_database_url)
    try:
        # Earlier runs' demo keys are revoked: only the key printed below works.
        for old in await store.list_api_keys():
            if old.name == DEMO_KEY_NAME and old.revoked_at is None:
                await store.revoke_api_key(old.key_id)
        issued = await KeyRing(store, load_pepper(settings)).issue(
            DEMO_KEY_NAME, [DEMO_ACCOUNT_GROUP_ID], list(Permission)
        )
    finally:
        await store.close()

    base = f"http://{settings.api_host}:{settings.api_port}"
    campaign_url = f"{base}/v1/accounts/{DEMO_ACCOUNT_GROUP_ID}/campaigns/{DEMO_CAMPAIGN_ID}"
    headers = {"Authorization": f"Bearer {issued.key}"}
    open_zone, closed_zone = demo_zones(datetime.now(UTC))
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        (await http.put(campaign_url, json=DEMO_CAMPAIGN)).raise_for_status()
        lead = {
            "id": new_object_id(),
            "email": "katherine@example.com",
            "firstName": "Katherine",
            "lastName": "Johnson",
            "company": "NACA Langley",
            "timeZone": open_zone,
        }
        night_lead = {
            "id": new_object_id(),
            "email": "grace@example.com",
            "firstName": "Grace",
            "lastName": "Hopper",
            "company": "Eckert-Mauchly",
            "timeZone": closed_zone,
        }
        urls, instance_ids = [], []
        for each in (lead, night_lead):
            enrolled = await http.post(f"{campaign_url}/workflow-instances", json={"lead": each})
            enrolled.raise_for_status()
            instance_ids.append(enrolled.json()["data"]["workflowInstanceId"])
            urls.append(f"{campaign_url}/workflow-instances/{instance_ids[-1]}")
        instance_url, night_url = urls
        instance_id, night_id = instance_ids
        for url in urls:
            for _ in range(100):
                status = (await http.get(url)).json()["data"]["leadStatus"]
                if status["hasPendingApproval"]:
                    break
                await asyncio.sleep(0.1)

    reply_file = write_demo_reply(settings, instance_url)
    inbound_url = f"{base}/v1/accounts/{DEMO_ACCOUNT_GROUP_ID}/inbound-messages"
    auth = shlex.quote(f"Authorization: Bearer {issued.key}")
    ui_base = temporal_ui_base(settings)

    def ui_link(workflow_instance_id: str) -> str:
        workflow_id = workflow_id_for(DEMO_ACCOUNT_GROUP_ID, DEMO_CAMPAIGN_ID, workflow_instance_id)
        return workflow_ui_url(ui_base, settings.temporal_namespace, workflow_id)

    print(
        "\n".join(
            [
                "",
                "Campaign engine is running.",
                f"  API          {base}  (OpenAPI: {base}/docs)",
                f"  Temporal UI  {ui_base}  (an instance's summary and details: its "
                '"User Metadata" tab)',
                f"  Outbox       {settings.resolved_outbox_dir}/",
                f"  Worker build {versioning.build_id(settings)} (current in Worker Deployment "
                f"{settings.worker_deployment_name})",
                f"  Codec        {codec_endpoint(settings)}  (the UI shows payloads decrypted; "
                "CLI: --codec-endpoint … --codec-auth 'Bearer <key>')",
                f"  Demo key     {issued.key}",
                f"               (key id {issued.id}, account group id {DEMO_ACCOUNT_GROUP_ID})",
                f"  Campaign id  {DEMO_CAMPAIGN_ID} (account group id {DEMO_ACCOUNT_GROUP_ID})",
                "",
                "The demo campaign sends every day 08:00-20:00 in each lead's time zone.",
                "",
                f"Katherine ({open_zone}, inside the window) waits at the approval gate of step "
                "'intro'.",
                f"  lead id                {lead['id']}",
                f"  workflow instance id   {instance_id}",
                f"  Web UI                 {ui_link(instance_id)}",
                "",
                "Approve it; the message is sent at once:",
                "",
                f"  curl -sS -X POST -H {auth} {instance_url}/approve",
                "",
                "Read its status:",
                "",
                f"  curl -sS -H {auth} {instance_url}",
                "",
                f"Grace ({closed_zone}, night there) waits too.",
                f"  lead id                {night_lead['id']}",
                f"  workflow instance id   {night_id}",
                f"  Web UI                 {ui_link(night_id)}",
                "",
                "Approve it, then read it: `delivery` says `scheduled` and when it sends (so does "
                "the UI):",
                "",
                f"  curl -sS -X POST -H {auth} {night_url}/approve",
                f"  curl -sS -H {auth} {night_url}",
                "",
                "Pause and resume the campaign (approvals still work; nothing is sent meanwhile):",
                "",
                f"  curl -sS -X POST -H {auth} {campaign_url}/pause",
                f"  curl -sS -X POST -H {auth} {campaign_url}/resume",
                "",
                f"Katherine answers (a sample reply to step 'intro': {reply_file}). Post it as an "
                "inbound mail hook would; her instance stops LEAD_REPLIED and shows the reply:",
                "",
                f"  curl -sS -X POST -H {auth} -H 'Content-Type: message/rfc822' "
                f"--data-binary @{shlex.quote(str(reply_file))} {inbound_url}",
                f"  curl -sS -H {auth} {instance_url}",
                f"  curl -sS -H {auth} {campaign_url}/stats",
                "",
                "Ctrl-C stops everything.",
                "",
            ]
        ),
        flush=True,
    )
