"""`campaign-engine`: run the API, the worker, or both beside a Temporal dev server; manage keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_settings import SettingsError
from temporalio.client import Client
from temporalio.service import RPCError

from activities.templates import render_pool_held
from campaign_engine import dkim_keys, logs, observability, secret_policy
from campaign_engine.ids import is_object_id
from campaign_engine.keys import (
    ALL_ACCOUNT_GROUPS,
    KeyKindError,
    KeyRing,
    Permission,
    check_key_kind,
    load_pepper,
)
from campaign_engine.ports import PortInUse
from campaign_engine.private_files import make_private_dir, secure_state_dir
from campaign_engine.settings import Settings, settings_error_lines
from campaign_engine.store import Store
from campaign_engine.temporal import (
    TemporalConnectionError,
    check_connection,
    connect,
    connect_with_retry,
    load_connection,
)
from entrypoints import dev, leads_import
from entrypoints.servers import api_server, bind_api_socket
from worker import build_worker, versioning
from worker.gauges import reporting_open_gates
from workflows.types import WORKFLOW_TYPE

logger = logging.getLogger("campaign_engine")


def configure_logging(settings: Settings, default_format: logs.LogFormat = "text") -> None:
    """Logging at `settings.log_level`, in `settings.log_format` or else `default_format`."""
    logs.configure(settings.log_level, settings.log_format or default_format)


# --- keys ---------------------------------------------------------------------------------------


async def _with_keyring(
    settings: Settings, action: Callable[[KeyRing, Store], Coroutine[Any, Any, int]]
) -> int:
    store = await Store.open(settings.resolved_database_url)
    try:
        return await action(KeyRing(store, load_pepper(settings)), store)
    finally:
        await store.close()


def keys_create(settings: Settings, args: argparse.Namespace) -> int:
    """`campaign-engine keys create`: issues a key and prints it once, as JSON.

    Returns 2 when an account group is not a 24-character lowercase hex id, when neither
    `--account-group` nor `--all-account-groups` is given, or when `--all-account-groups` comes
    with an account group or with a permission other than `payloads:decode`.
    """
    groups: list[str] = list(args.account_group or [])
    if args.all_account_groups:
        groups.append(ALL_ACCOUNT_GROUPS)
    elif not groups:
        print(
            "error: name --account-group ID (repeatable) or --all-account-groups", file=sys.stderr
        )
        return 2
    try:
        check_key_kind(groups, [Permission(p) for p in args.permission])
    except KeyKindError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for group in args.account_group or []:
        if not is_object_id(group):
            print(
                f"error: account group {group!r} is not a 24-character lowercase hex id",
                file=sys.stderr,
            )
            return 2

    async def create(keyring: KeyRing, _: Store) -> int:
        issued = await keyring.issue(args.name, groups, [Permission(p) for p in args.permission])
        print(issued.to_json())
        return 0

    return asyncio.run(_with_keyring(settings, create))


def keys_list(settings: Settings, _: argparse.Namespace) -> int:
    """`campaign-engine keys list`: one JSON line per key, revoked ones included (never the key
    itself)."""

    async def list_keys(_: KeyRing, store: Store) -> int:
        for key in await store.list_api_keys():
            print(
                json.dumps(
                    {
                        "id": key.key_id,
                        "name": key.name,
                        "accountGroups": key.account_groups,
                        "permissions": key.permissions,
                        "createdAt": key.created_at.isoformat(),
                        "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
                        "lastUsedAt": key.last_used_at.isoformat() if key.last_used_at else None,
                    }
                )
            )
        return 0

    return asyncio.run(_with_keyring(settings, list_keys))


def keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    """`campaign-engine keys revoke <key id>`: revokes the key (a repeat keeps the first time); 1
    for an unknown id."""

    async def revoke(_: KeyRing, store: Store) -> int:
        if not await store.revoke_api_key(args.key_id):
            print(f"error: no API key with id {args.key_id}", file=sys.stderr)
            return 1
        print(json.dumps({"id": args.key_id, "revoked": True}))
        return 0

    return asyncio.run(_with_keyring(settings, revoke))


# --- suppressions ------------------------------------------------------------------------------


def suppressions_list(settings: Settings, args: argparse.Namespace) -> int:
    """One JSON line per suppression (never an address: only whether a hash is kept), with the
    evidence that decided an automatic one (a bounce's status and diagnostic, a complaint's
    feedback type, the rule and its source), so a wrong one can be found and lifted."""

    async def list_them(_: KeyRing, store: Store) -> int:
        for row in await store.list_suppressions(args.account_group):
            print(
                json.dumps(
                    {
                        "accountGroupId": row.account_group_id,
                        "leadId": row.lead_id,
                        "hasEmail": row.email_hash is not None,
                        "source": row.source,
                        "decidedBy": row.decided_by,
                        "note": row.note,
                        "createdAt": row.created_at.isoformat(),
                        "evidence": row.evidence,
                    }
                )
            )
        return 0

    return asyncio.run(_with_keyring(settings, list_them))


def suppressions_lift(settings: Settings, args: argparse.Namespace) -> int:
    """Deletes one suppression: the lead may be enrolled (and mailed) again. Instances it
    stopped stay stopped. Exit 1 when there was none."""

    async def lift(_: KeyRing, store: Store) -> int:
        if not await store.lift_suppression(args.account_group, args.lead):
            print(f"error: lead {args.lead} is not suppressed there", file=sys.stderr)
            return 1
        print(
            json.dumps({"accountGroupId": args.account_group, "leadId": args.lead, "lifted": True})
        )
        return 0

    return asyncio.run(_with_keyring(settings, lift))


# --- leads --------------------------------------------------------------------------------------

API_URL_VARIABLE = "CAMPAIGN_ENGINE_API_URL"
API_KEY_VARIABLE = "CAMPAIGN_ENGINE_API_KEY"


def import_leads(settings: Settings, args: argparse.Namespace) -> int:
    """`campaign-engine leads import FILE.csv`: enrols a CSV file's leads in a campaign through
    the batch endpoint (`entrypoints.leads_import`: columns, lead ids, exit codes).

    The API is `--api-url`, else `$CAMPAIGN_ENGINE_API_URL`, else the settings' own
    `http://HOST:PORT` (`CAMPAIGN_ENGINE_API_HOST`, `CAMPAIGN_ENGINE_API_PORT`); the key
    `--api-key`, else `$CAMPAIGN_ENGINE_API_KEY`. Exit 2 with one line, nothing sent, for ids
    that are not 24-character lowercase hex, no key, a `--batch-size` outside 1-1,000, a bad
    `--column` or a file that is not readable CSV.
    """
    key = args.api_key or os.environ.get(API_KEY_VARIABLE, "")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.api_host, settings.api_host)
    host = f"[{host}]" if ":" in host else host
    url = args.api_url or os.environ.get(API_URL_VARIABLE) or f"http://{host}:{settings.api_port}"
    try:
        for name, value in (("account group", args.account_group), ("campaign", args.campaign)):
            if not is_object_id(value):
                raise leads_import.UsageError(
                    f"{name} {value!r} is not a 24-character lowercase hex id"
                )
        if not key:
            raise leads_import.UsageError(
                f"no API key: set {API_KEY_VARIABLE} (or pass --api-key) to a key with "
                "campaigns:execute on the account group"
            )
        if not 1 <= args.batch_size <= leads_import.MAX_BATCH_ROWS:
            raise leads_import.UsageError(
                f"--batch-size {args.batch_size}: from 1 to {leads_import.MAX_BATCH_ROWS}"
            )
        options = leads_import.ImportOptions(
            file=args.file,
            account_group_id=args.account_group,
            campaign_id=args.campaign,
            api_url=url,
            api_key=key,
            columns=leads_import.parse_columns(args.column),
            batch_size=args.batch_size,
            report=args.report,
            encoding=args.encoding,
            delimiter=args.delimiter,
            timeout_seconds=args.timeout,
        )
        return leads_import.run(options)
    except leads_import.UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return leads_import.EXIT_USAGE


# --- DKIM ---------------------------------------------------------------------------------------


def dkim_init(settings: Settings, args: argparse.Namespace) -> int:
    """Generates an RSA key pair (RFC 6376 §3.3.3: 1024 to 4096 bits; 2048 by default), writes the
    private key (PEM, mode 0600, never overwritten) and prints the DNS TXT record to publish at
    `<selector>._domainkey.<domain>` and the settings to use."""
    path = Path(args.key_path)
    key = dkim_keys.generate(args.bits)
    try:
        make_private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"error: {path} exists; not overwritten", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as file:
        file.write(key.private_pem)
    print(f"; private key written to {path}")
    print("; publish this TXT record, then set the settings below")
    print(dkim_keys.dns_record(args.selector, args.domain, key.public_txt))
    print(f"CAMPAIGN_ENGINE_DKIM_SELECTOR={args.selector}")
    print(f"CAMPAIGN_ENGINE_DKIM_DOMAIN={args.domain}")
    print(f"CAMPAIGN_ENGINE_DKIM_PRIVATE_KEY_PATH={path.resolve()}")
    return 0


def keys_rotate_payload_key(settings: Settings, args: argparse.Namespace) -> int:
    """A new payload key: first in the key file, or (keys from settings) what to set, in order."""
    from campaign_engine import codec

    try:
        key = codec.new_key(args.id)
        if codec.keys_from_settings(settings):
            current = codec.load_key_ring(settings)
            if current.get(key.id) is not None:
                raise codec.KeyRingError(f"payload key id {key.id!r} is already in the ring")
        else:
            ring = codec.add_key_to_file(settings, key)
    except codec.KeyRingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not codec.keys_from_settings(settings):
        print(
            json.dumps(
                {
                    "added": key.id,
                    "keyFile": str(codec.key_file(settings)),
                    "ring": ring.ids,
                    "next": "restart the API and every worker: they then encrypt with it. Until "
                    "then they still decrypt it (a process re-reads the file on meeting an "
                    "unknown key id).",
                }
            )
        )
        return 0
    variable = "CAMPAIGN_ENGINE_PAYLOAD_KEYS"
    print(
        "\n".join(
            [
                f"Payload keys come from {variable}: nothing was changed. New key:",
                "",
                f"  {key.entry()}",
                "",
                "1. On every API and worker, add it LAST (it decrypts, does not encrypt yet) and "
                "restart them all:",
                f'     {variable}="${variable},{key.entry()}"',
                "2. Once every process runs with it, move it FIRST (it encrypts from now on) and "
                "restart again:",
                f'     {variable}="{key.entry()},<the previous entries>"',
                "3. Run `campaign-engine keys payload-key-usage`; drop an old key once it is "
                "listed under `retirable`.",
                "",
                "Step 1 first: a process that encrypts with a key another process lacks stalls "
                "that process's workflow tasks (they retry) until it has the key.",
            ]
        ),
        flush=True,
    )
    return 0


def keys_payload_key_usage(settings: Settings, _: argparse.Namespace) -> int:
    """Which payload keys open workflows still reference (JSON on stdout)."""
    from campaign_engine.codec import load_key_ring
    from campaign_engine.key_usage import payload_key_usage
    from campaign_engine.temporal import connect

    async def report() -> int:
        client = await connect(settings)
        usage = await payload_key_usage(client, load_key_ring(settings))
        print(json.dumps(usage.as_json()))
        return 0

    _exit_flushed(asyncio.run(report()))


def _exit_flushed(code: int) -> NoReturn:
    """Ends a short command that used a Temporal client, its output flushed, without finalizing.

    The Temporal core's threads outlive the client; once in a while one of them called into the
    interpreter while it was finalizing, and the process aborted (SIGABRT) after printing its
    report. A short command with its output flushed has nothing left to finalize.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- patches --------------------------------------------------------------------------------------

PATCHES_CAN_MOVE_ON = 3
"""`campaign-engine patches` exit code: a patch can be deprecated or removed."""


def patches_status(settings: Settings, args: argparse.Namespace) -> int:
    """`campaign-engine patches`: per workflow patch, whether running instances may still need what
    the code keeps for it (from visibility), and what a developer does next.

    Exit code: 0 when no patch can move on, `PATCHES_CAN_MOVE_ON` (3) when one can be deprecated
    or removed, 1 when Temporal could not be asked.
    """
    from temporalio.service import RPCError

    from campaign_engine.temporal import connect
    from entrypoints import patches
    from workflows.versions import PATCHES

    async def run() -> int:
        try:
            client = await connect(settings)
            statuses = await patches.check(client, PATCHES.values())
        except (RuntimeError, RPCError) as error:
            print(
                "campaign-engine patches: could not ask Temporal at "
                f"{load_connection(settings).address}: {error}",
                file=sys.stderr,
            )
            return 1
        now = datetime.now(UTC)
        movable = [s.patch.id for s in statuses if s.verdict in patches.ACTIONABLE]
        if args.json:
            document = {
                "checkedAt": now.isoformat(timespec="seconds"),
                "namespace": load_connection(settings).namespace,
                "workflowType": WORKFLOW_TYPE,
                "patches": [status.as_json(now.date()) for status in statuses],
                "canMoveOn": movable,
            }
            print(json.dumps(document))
        else:
            print(
                patches.report(
                    statuses,
                    namespace=load_connection(settings).namespace,
                    now=now,
                    address=load_connection(settings).address,
                )
            )
        return PATCHES_CAN_MOVE_ON if movable else 0

    _exit_flushed(asyncio.run(run()))


# --- worker deployment --------------------------------------------------------------------------


def _run_short(settings: Settings, command: Callable[[Client], Coroutine[Any, Any, int]]) -> int:
    """Connects, runs `command` with the client and leaves the process with its exit code (see
    below); exit 1 with one line on stderr when Temporal cannot be reached or refuses a call."""

    async def connected() -> int:
        try:
            client = await connect(settings)
        except RuntimeError as error:  # the SDK's connection failure
            address = load_connection(settings).address
            print(f"error: Temporal at {address}: {error}", file=sys.stderr)
            return 1
        try:
            return await command(client)
        except RPCError as error:
            print(f"error: Temporal answered {error.status.name}: {error.message}", file=sys.stderr)
            return 1

    code = asyncio.run(connected())
    # As `keys payload-key-usage`: the Temporal core's threads outlive the client and may call
    # into an interpreter that is finalizing (SIGABRT after the output); nothing is left to do.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def deployment_status(settings: Settings, _: argparse.Namespace) -> int:
    """`campaign-engine deployment status`: the Worker Deployment as JSON (current and ramping
    build, every version with its status) with this release's build id and whether the task
    queue routes to it; exit 1 when no worker of the deployment has polled yet."""

    async def report(client: Client) -> int:
        name = settings.worker_deployment_name
        status = await versioning.describe_deployment(client, name)
        if status is None:
            print(f"error: no worker deployment {name!r} in Temporal yet", file=sys.stderr)
            return 1
        print(
            json.dumps(
                {
                    **status.as_json(),
                    "thisBuildId": versioning.build_id(settings),
                    "taskQueue": settings.task_queue,
                    "taskQueueRoutesTo": await versioning.routed_build_ids(
                        client, settings.task_queue
                    ),
                }
            )
        )
        return 0

    return _run_short(settings, report)


def deployment_set_current(settings: Settings, args: argparse.Namespace) -> int:
    """`campaign-engine deployment set-current [BUILD_ID]`: makes the build (default: this
    release's) the deployment's current version and waits until the task queue routes to it;
    prints JSON with the build before and the seconds it took. Exit 1 when Temporal refused or
    it did not happen within `--within` seconds (a build no worker polls as never does)."""
    build: str = args.build_id or versioning.build_id(settings)

    async def promote(client: Client) -> int:
        name = settings.worker_deployment_name
        before = await versioning.describe_deployment(client, name)
        try:
            seconds = await versioning.set_current(
                client,
                deployment_name=name,
                build=build,
                task_queue=settings.task_queue,
                within=args.within,
            )
        except versioning.DeploymentError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(
            json.dumps(
                {
                    "deploymentName": name,
                    "currentBuildId": build,
                    "previousBuildId": before.current_build_id if before else None,
                    "seconds": round(seconds, 3),
                }
            )
        )
        return 0

    return _run_short(settings, promote)


def deployment_prune(settings: Settings, _: argparse.Namespace) -> int:
    """`campaign-engine deployment prune`: deletes the versions Temporal lets go (neither current
    nor ramping, no poller for 5 minutes, nothing pinned draining); prints them as JSON."""

    async def delete(client: Client) -> int:
        deleted = await versioning.prune(client, settings.worker_deployment_name)
        print(json.dumps({"deploymentName": settings.worker_deployment_name, "deleted": deleted}))
        return 0

    return _run_short(settings, delete)


# --- processes ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_api(settings: Settings, _: argparse.Namespace) -> int:
    """`campaign-engine api`: serves the REST API until SIGTERM (then drains, bounded)."""
    configure_logging(settings, "json")
    observability.configure_tracing("campaign-engine-api")
    # Bound first: a taken port is then `PortInUse` naming the setting (exit 2), not uvicorn's
    # own exit 1 after a log line.
    listening = bind_api_socket(settings)
    # A connection setting Temporal refuses (no client certificate, an unknown CA, a refused API
    # key) stops the start here, in one line (main: exit 2); a Temporal that is merely down does
    # not: the API starts and answers 502 until it is back.
    asyncio.run(check_connection(settings))
    observability.serve_api_metrics(settings.metrics_host, settings.api_metrics_port)
    api_server(settings).run(sockets=[listening])
    return 0


def run_worker(settings: Settings, _: argparse.Namespace) -> int:
    """`campaign-engine worker`: runs workflows and activities until SIGINT/SIGTERM.

    Never returns: it leaves with `os._exit` once logs and spans are flushed (see the comment).
    """
    configure_logging(settings, "json")
    observability.configure_tracing("campaign-engine-worker")
    try:
        code = asyncio.run(_run_worker(settings))
    except TemporalConnectionError as error:
        # One line naming the setting, exit 2 (as `main` does for other settings), without
        # finalizing: see below.
        print(f"campaign-engine: {error}", file=sys.stderr)
        code = 2
    # The worker has shut down and reported every activity result, but the SDK's native threads
    # (its graceful-shutdown timer among them) may still release Python objects; interpreter
    # finalization racing them aborts the process ("Fatal Python error: PyGILState_Release")
    # instead of exiting 0. Nothing is left to clean up, so leave without finalization, once
    # buffered spans and log lines are out.
    observability.flush_tracing()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _run_worker(settings: Settings) -> int:
    stop = asyncio.Event()
    with _stop_on_signals(stop):
        runtime = observability.worker_runtime(settings.metrics_host, settings.worker_metrics_port)
        client = await connect_with_retry(settings, stop, runtime=runtime)
        if client is None:
            return 0
        from campaign_engine.webhook_secrets import WebhookSecrets

        store = await Store.open(
            settings.resolved_database_url,
            webhook_secrets=WebhookSecrets.for_settings(settings),
        )
        try:
            with render_pool_held():
                worker = build_worker(client, settings, store)
                async with worker, reporting_open_gates(client, settings.task_queue):
                    logger.info(
                        "worker polling task queue %s at %s as build %s of deployment %s (%s)",
                        settings.task_queue,
                        load_connection(settings).address,
                        versioning.build_id(settings),
                        settings.worker_deployment_name,
                        worker.versioning_outcome,
                    )
                    await stop.wait()
        finally:
            await store.close()
    return 0


def run_dev(settings: Settings, _: argparse.Namespace) -> int:
    """`campaign-engine dev`: Temporal dev server, worker, API and a demo lead, until
    SIGINT/SIGTERM."""
    configure_logging(settings)
    observability.configure_tracing("campaign-engine-dev")
    return asyncio.run(dev.run(settings))


# --- entry point --------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The `campaign-engine` argument parser; each subcommand sets its handler in `handler`."""
    root = argparse.ArgumentParser(prog="campaign-engine", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "dev", help="Temporal dev server + worker + API + a demo, on embedded defaults"
    ).set_defaults(handler=run_dev)
    commands.add_parser("api", help="serve the REST API").set_defaults(handler=run_api)
    commands.add_parser("worker", help="run campaign workflows and activities").set_defaults(
        handler=run_worker
    )

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="issue a key; prints it once, as JSON")
    create.add_argument("--account-group", action="append", metavar="ID", help="repeatable")
    create.add_argument(
        "--all-account-groups",
        action="store_true",
        help="an operator's key of every account group: with --permission payloads:decode only",
    )
    create.add_argument(
        "--permission",
        action="append",
        required=True,
        choices=[p.value for p in Permission],
        help="repeatable",
    )
    create.add_argument("--name", default="api key")
    create.set_defaults(handler=keys_create)
    keys.add_parser("list", help="one JSON line per key (never the key itself)").set_defaults(
        handler=keys_list
    )
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=keys_revoke)

    suppressions = commands.add_parser(
        "suppressions", help="list and lift suppressions (unsubscribed leads)"
    ).add_subparsers(dest="suppressions_command", required=True)
    listing = suppressions.add_parser("list", help="one JSON line per suppression")
    listing.add_argument("--account-group", metavar="ID", help="only this account group")
    listing.set_defaults(handler=suppressions_list)
    lift = suppressions.add_parser("lift", help="delete a lead's suppression")
    lift.add_argument("--account-group", required=True, metavar="ID")
    lift.add_argument("--lead", required=True, metavar="ID")
    lift.set_defaults(handler=suppressions_lift)

    leads = commands.add_parser(
        "leads", help="import a CSV file of leads into a campaign"
    ).add_subparsers(dest="leads_command", required=True)
    importing = leads.add_parser(
        "import",
        help="enrol a CSV file's leads in a campaign through the API, 1,000 per request "
        "(exit 3: some rows invalid; 1: the run failed, run it again)",
        description=leads_import.DESCRIPTION,
    )
    importing.add_argument("file", type=Path, metavar="FILE.csv", help="UTF-8, a header row first")
    importing.add_argument("--account-group", required=True, metavar="ID")
    importing.add_argument("--campaign", required=True, metavar="ID")
    importing.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=HEADER",
        help="the column of a lead field (repeatable), e.g. --column email=E-mail; FIELD is "
        "id, email, firstName, lastName, company or timeZone; FIELD= reads none. Unnamed fields "
        "are found by usual headers, case and punctuation ignored (Email, First Name, last_name, "
        "Company, Time zone, Id)",
    )
    importing.add_argument(
        "--api-url",
        metavar="URL",
        help=f"the API (default: ${API_URL_VARIABLE}, else http://HOST:PORT of the settings "
        "CAMPAIGN_ENGINE_API_HOST and CAMPAIGN_ENGINE_API_PORT)",
    )
    importing.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"a key with campaigns:execute (default: ${API_KEY_VARIABLE}; prefer the variable: "
        "an option shows in the process list)",
    )
    importing.add_argument(
        "--report", type=Path, metavar="FILE.csv", help="write each row's outcome there"
    )
    importing.add_argument(
        "--batch-size", type=int, default=1000, metavar="N", help="rows per request, 1 to 1000"
    )
    importing.add_argument("--encoding", default="utf-8", help="the file's text encoding")
    importing.add_argument("--delimiter", default=",", help="the column separator")
    importing.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="longest wait for one batch's answer",
    )
    # A client of the API: it reads no secret setting and keeps no local state.
    importing.set_defaults(handler=import_leads, reads_secrets=False)

    dkim = commands.add_parser("dkim", help="DKIM keys").add_subparsers(
        dest="dkim_command", required=True
    )
    init = dkim.add_parser("init", help="generate a key pair; print the DNS TXT record")
    init.add_argument("--selector", required=True)
    init.add_argument("--domain", required=True)
    init.add_argument("--key-path", default="var/dkim-private.pem")
    init.add_argument("--bits", type=int, default=2048, choices=[1024, 2048, 3072, 4096])
    # It reads no secret setting (it makes a key before any is set).
    init.set_defaults(handler=dkim_init, reads_secrets=False)
    rotate = keys.add_parser(
        "rotate-payload-key",
        help="add a new payload encryption key (key file), or print what to set (settings)",
    )
    rotate.add_argument("--id", default=None, help="key id (default: k<UTC timestamp>)")
    rotate.set_defaults(handler=keys_rotate_payload_key)
    keys.add_parser(
        "payload-key-usage",
        help="which payload keys open workflows still reference; which can be retired (JSON)",
    ).set_defaults(handler=keys_payload_key_usage)
    status = commands.add_parser(
        "patches",
        help="which workflow patches running instances still need; which can be deprecated or "
        "removed (exit 3 when one can)",
        description=patches_status.__doc__,
    )
    status.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    status.set_defaults(handler=patches_status)

    deployment = commands.add_parser(
        "deployment", help="the Worker Deployment: which build gets the tasks"
    ).add_subparsers(dest="deployment_command", required=True)
    deployment.add_parser(
        "status", help="current build, every version, this release's build id (JSON)"
    ).set_defaults(handler=deployment_status)
    set_current = deployment.add_parser(
        "set-current", help="make a build current and wait until the task queue routes to it"
    )
    set_current.add_argument(
        "build_id", nargs="?", default=None, help="default: this release's build id"
    )
    set_current.add_argument(
        "--within",
        type=float,
        default=versioning.DEFAULT_WITHIN_SECONDS,
        metavar="SECONDS",
        help="give up after this long (a worker of the build must be polling)",
    )
    set_current.set_defaults(handler=deployment_set_current)
    deployment.add_parser(
        "prune", help="delete old versions Temporal lets go (no pollers for 5 min)"
    ).set_defaults(handler=deployment_prune)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Parses `argv` (default: `sys.argv[1:]`), reads the settings and runs the command; returns its
    exit code (2 for invalid settings, a refused secret (`campaign_engine.secret_policy`), a port
    in use or a Temporal connection setting that cannot work, 1 when a worker could not make its
    build current as the settings demand)."""
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as error:
        # A setting refused at start (a sender that is not an address, JSON that does not
        # parse): say which, exit 2.
        for line in settings_error_lines(error):
            print(f"campaign-engine: invalid setting {line}", file=sys.stderr)
        return 2
    if getattr(args, "reads_secrets", True):
        # No placeholder runs: a secret copied from .env.example or the README, or too short,
        # stops every command that would use it, before it is used (secret_policy).
        refused = secret_policy.refusals(settings)
        for refusal in refused:
            print(f"campaign-engine: refused: {refusal.line()}", file=sys.stderr)
        if refused:
            return 2
        # Owner-only local state, also where an earlier version left it readable by others.
        secure_state_dir(
            settings.state_dir,
            outbox_dir=settings.resolved_outbox_dir if settings.outbox_dir is None else None,
        )
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return handler(settings, args)
    except PortInUse as error:
        print(f"campaign-engine: {error}", file=sys.stderr)
        return 2
    except versioning.DeploymentError as error:
        # A worker told to make its build current (`make dev`) that could not.
        print(f"campaign-engine: {error}", file=sys.stderr)
        return 1
    except TemporalConnectionError as error:
        # A Temporal connection setting that cannot work (campaign_engine.temporal): one line,
        # exit 2, without finalizing: the Temporal core's threads of the refused client may
        # still call into the interpreter, which then aborts (SIGABRT) instead of exiting 2.
        print(f"campaign-engine: {error}", file=sys.stderr)
        _exit_flushed(2)


if __name__ == "__main__":
    sys.exit(main())
