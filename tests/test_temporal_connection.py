"""Connecting like every Temporal tool: profiles, `TEMPORAL_*` variables, TLS, mTLS, API keys.

For real: the session's dev server behind a private nginx that terminates TLS (devsupport/nginx.py;
one listener with TLS only, one requiring a client certificate, one requiring an API key), with a
CA and certificates made here (devsupport/pki.py) or by deploy/temporal/make-certs.sh.
"""

from __future__ import annotations

import asyncio
import email
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from campaign_engine.settings import Settings
from campaign_engine.temporal import (
    TemporalConnection,
    TemporalConnectionError,
    connect,
    load_connection,
    without_temporal_variables,
)
from devsupport.nginx import GrpcTlsProxy, NginxUnavailable
from devsupport.pki import Pki
from entrypoints.devserver import DevServer, free_port
from tests.helpers import (
    approve_ok,
    assert_eventually,
    create_campaign,
    enrol_to_gate,
    outbox_files,
    running_api,
    worker_process,
)

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-api-key-4b1d"
SERVER_NAME = "temporal.test"
START_WITHIN_SECONDS = 90.0
"""Bounds a process expected to exit at start: a hang fails the test instead of stalling it."""


@pytest.fixture(scope="module")
def tls_dir() -> Iterator[Path]:
    """A directory of the module's own for certificates and nginx's files."""
    directory = Path(tempfile.mkdtemp(prefix="ce-tls-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(tls_dir: Path) -> Pki:
    """The proxy's CA, its server certificate for `temporal.test` only (so dialling 127.0.0.1
    needs TEMPORAL_TLS_SERVER_NAME) and a client certificate."""
    return Pki.create(tls_dir / "pki", server_names=[SERVER_NAME])


@pytest.fixture(scope="module")
def stranger(tls_dir: Path) -> Pki:
    """Another CA and its certificates: trusted by no one here."""
    return Pki.create(tls_dir / "stranger")


def _proxy(directory: Path, upstream: str, pki: Pki) -> GrpcTlsProxy:
    proxy = GrpcTlsProxy(directory, upstream, pki, API_KEY)
    try:
        proxy.start()
    except NginxUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))
    return proxy


@pytest.fixture(scope="module")
def proxy(tls_dir: Path, temporal_server: DevServer, pki: Pki) -> Iterator[GrpcTlsProxy]:
    """nginx terminating TLS before the session's dev server (module docstring)."""
    started = _proxy(tls_dir / "nginx", temporal_server.address, pki)
    yield started
    started.stop()


def _tls_env(pki: Pki, *, client: Pki | None = None) -> dict[str, str]:
    """TEMPORAL_* variables trusting `pki`'s CA, naming its server, presenting `client`'s
    certificate when given."""
    env = {
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca_pem),
        "TEMPORAL_TLS_SERVER_NAME": SERVER_NAME,
    }
    if client is not None:
        env["TEMPORAL_TLS_CLIENT_CERT_PATH"] = str(client.client_pem)
        env["TEMPORAL_TLS_CLIENT_KEY_PATH"] = str(client.client_key)
    return env


def _environ(**variables: str) -> dict[str, str]:
    """A process environment with exactly these TEMPORAL_* variables (and no config file unless
    one is named)."""
    return {**without_temporal_variables(os.environ), **variables}


# --- where the settings come from ------------------------------------------------------------


def test_precedence_profile_then_variables_then_our_settings(tmp_path: Path) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        "[profile.default]\n"
        'address = "file-default:7233"\n'
        "[profile.cloud]\n"
        'address = "file-cloud.tmprl.cloud:7233"\n'
        'namespace = "file-ns.a1b2c"\n'
        'api_key = "file-key"\n'
    )
    file_only = load_connection(
        Settings(), _environ(TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE="cloud")
    )
    assert (file_only.address, file_only.namespace) == (
        "file-cloud.tmprl.cloud:7233",
        "file-ns.a1b2c",
    )
    # An API key turns TLS on (system roots), as for Temporal Cloud.
    assert (file_only.api_key, file_only.tls) == ("file-key", True)
    assert load_connection(Settings(), _environ(TEMPORAL_CONFIG_FILE=str(config))).address == (
        "file-default:7233"
    )

    variables = load_connection(
        Settings(),
        _environ(
            TEMPORAL_CONFIG_FILE=str(config),
            TEMPORAL_PROFILE="cloud",
            TEMPORAL_ADDRESS="env.example:7233",
            TEMPORAL_NAMESPACE="env-ns",
            TEMPORAL_API_KEY="env-key",
        ),
    )
    assert (variables.address, variables.namespace, variables.api_key) == (
        "env.example:7233",
        "env-ns",
        "env-key",
    )

    ours = load_connection(
        Settings(temporal_address="ours:7233", temporal_namespace="ours-ns"),
        _environ(TEMPORAL_ADDRESS="env.example:7233", TEMPORAL_NAMESPACE="env-ns"),
    )
    assert (ours.address, ours.namespace) == ("ours:7233", "ours-ns")
    # Set to the default value is still set: it overrides.
    assert (
        load_connection(
            Settings(temporal_address="127.0.0.1:7233"), _environ(TEMPORAL_ADDRESS="env:1")
        ).address
        == "127.0.0.1:7233"
    )

    nothing = load_connection(Settings(), _environ())
    assert nothing == TemporalConnection(
        address="127.0.0.1:7233", namespace="default", config_file=Path(os.devnull)
    )
    assert not nothing.tls_enabled
    # TEMPORAL_TLS=false keeps an API key in plain text (a local proxy that checks it).
    assert load_connection(
        Settings(), _environ(TEMPORAL_API_KEY="k", TEMPORAL_TLS="false")
    ).tls is (False)


def test_the_api_key_never_shows_in_a_repr(tmp_path: Path) -> None:
    connection = load_connection(Settings(), _environ(TEMPORAL_API_KEY="secret-key-value"))
    assert "secret-key-value" not in repr(connection)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"}, "TEMPORAL_CONFIG_FILE"),
        ({"TEMPORAL_PROFILE": "nope"}, "TEMPORAL_PROFILE"),
        ({"TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent/c.pem"}, "TEMPORAL_TLS_CLIENT_CERT_PATH"),
        (
            {"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "/nonexistent/ca.pem"},
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
        ),
        ({"TEMPORAL_TLS": "maybe"}, "TEMPORAL_TLS"),
        (
            {"TEMPORAL_TLS_DISABLE_HOST_VERIFICATION": "true"},
            "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
        ),
    ],
)
def test_a_setting_that_cannot_work_is_named(variables: dict[str, str], named: str) -> None:
    with pytest.raises(TemporalConnectionError) as refused:
        load_connection(Settings(), _environ(**variables))
    message = str(refused.value)
    assert named in message and "\n" not in message


def test_a_malformed_profile_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text("[profile.default\naddress =")
    with pytest.raises(TemporalConnectionError) as refused:
        load_connection(Settings(), _environ(TEMPORAL_CONFIG_FILE=str(config)))
    assert str(config) in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("files", "named"),
    [
        # A certificate without its key, and a key without its certificate.
        ({"TEMPORAL_TLS_CLIENT_CERT_PATH": "client.pem"}, "TEMPORAL_TLS_CLIENT_KEY_PATH"),
        ({"TEMPORAL_TLS_CLIENT_KEY_PATH": "client.key"}, "TEMPORAL_TLS_CLIENT_CERT_PATH"),
        # Files that hold no PEM of the right kind: garbage, or a key where a certificate goes.
        (
            {
                "TEMPORAL_TLS_CLIENT_CERT_PATH": "garbage",
                "TEMPORAL_TLS_CLIENT_KEY_PATH": "client.key",
            },
            "TEMPORAL_TLS_CLIENT_CERT_PATH",
        ),
        (
            {
                "TEMPORAL_TLS_CLIENT_CERT_PATH": "client.pem",
                "TEMPORAL_TLS_CLIENT_KEY_PATH": "garbage",
            },
            "TEMPORAL_TLS_CLIENT_KEY_PATH",
        ),
        (
            {
                "TEMPORAL_TLS_CLIENT_CERT_PATH": "client.pem",
                "TEMPORAL_TLS_CLIENT_KEY_PATH": "ca.pem",
            },
            "TEMPORAL_TLS_CLIENT_KEY_PATH",
        ),
        ({"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "client.key"}, "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
        ({"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "empty"}, "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
    ],
)
def test_tls_material_that_cannot_work_is_named_before_connecting(
    pki: Pki, tls_dir: Path, files: dict[str, str], named: str
) -> None:
    """Caught at load, not at connect: the SDK would fail there with an error that reads as
    "not reachable", and the worker would retry for ever (found by a new user's trial)."""
    (tls_dir / "garbage").write_text("not a certificate\n")
    (tls_dir / "empty").write_text("")
    paths = {"client.pem": pki.client_pem, "client.key": pki.client_key, "ca.pem": pki.ca_pem}
    variables = {name: str(paths.get(file, tls_dir / file)) for name, file in files.items()}
    with pytest.raises(TemporalConnectionError) as refused:
        load_connection(Settings(), _environ(**variables))
    message = str(refused.value)
    assert named in message and "\n" not in message, message


def test_good_tls_material_loads(pki: Pki) -> None:
    connection = load_connection(Settings(), _environ(**_tls_env(pki, client=pki)))
    assert connection.client_certificate


def test_an_api_key_without_tls_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="campaign_engine.temporal"):
        load_connection(Settings(), _environ(TEMPORAL_API_KEY="k", TEMPORAL_TLS="false"))
    assert any("without TLS" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="campaign_engine.temporal"):
        load_connection(Settings(), _environ(TEMPORAL_API_KEY="k"))
    assert not any("without TLS" in record.getMessage() for record in caplog.records)


# --- through the TLS proxy --------------------------------------------------------------------


async def test_worker_and_api_run_an_approval_through_mtls(
    settings: Settings, proxy: GrpcTlsProxy, pki: Pki
) -> None:
    """The worker (a real `campaign-engine worker` process) and the API reach Temporal only
    through nginx, which requires our client certificate; the approved message is delivered."""
    env = _tls_env(pki, client=pki)
    settings = settings.model_copy(update={"temporal_address": proxy.mtls_address})
    client = await connect(settings, connection=load_connection(settings, _environ(**env)))
    async with worker_process(settings, **env), running_api(settings, client) as api:
        campaign = await create_campaign(api)
        instance_id = await enrol_to_gate(api, campaign)
        await approve_ok(api, campaign, instance_id)

        async def delivered_files() -> list[Path]:
            return outbox_files(settings)

        delivered = await assert_eventually(delivered_files, what="the approved message")
    message = email.message_from_bytes(delivered[0].read_bytes())
    assert message["Subject"] == "Hello Ada"
    calls = ("PollWorkflowTaskQueue", "PollActivityTaskQueue", "SignalWorkflowExecution")

    async def seen() -> list[str]:
        return proxy.access_lines(proxy.mtls_port)

    # nginx writes a call's line when the call ends: a poll may end a moment after its task ran.
    lines_seen = await assert_eventually(
        seen,
        lambda lines: all(any(f"/{call} " in line for line in lines) for call in calls),
        what="each kind of call in the proxy's access log",
    )
    for call in calls:
        lines = [line for line in lines_seen if f"/{call} " in line]
        assert all('"CN=campaign-engine"' in line for line in lines), lines


async def test_an_api_key_is_sent_as_the_bearer_token(
    settings: Settings, proxy: GrpcTlsProxy, pki: Pki
) -> None:
    settings = settings.model_copy(update={"temporal_address": proxy.api_key_address})
    env = _tls_env(pki)
    before = len(proxy.access_lines(proxy.api_key_port))
    client = await connect(
        settings, connection=load_connection(settings, _environ(**env, TEMPORAL_API_KEY=API_KEY))
    )
    assert await client.service_client.check_health()
    # nginx let the calls through only with `authorization: Bearer <key>` (bearer_ok=1).
    lines = proxy.access_lines(proxy.api_key_port)[before:]
    assert lines and all("bearer_ok=1" in line and line.endswith(" 200") for line in lines)

    for refused_env in (env, {**env, "TEMPORAL_API_KEY": "not-the-key"}):
        with pytest.raises(TemporalConnectionError) as refused:
            await connect(settings, connection=load_connection(settings, _environ(**refused_env)))
        assert "TEMPORAL_API_KEY" in str(refused.value)


async def test_a_profile_file_carries_tls_and_the_api_key(
    settings: Settings, proxy: GrpcTlsProxy, pki: Pki, tmp_path: Path
) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        "[profile.staging]\n"
        f'address = "{proxy.api_key_address}"\n'
        f'api_key = "{API_KEY}"\n'
        "[profile.staging.tls]\n"
        f'server_ca_cert_path = "{pki.ca_pem}"\n'
        f'server_name = "{SERVER_NAME}"\n'
    )
    connection = load_connection(
        Settings(), _environ(TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE="staging")
    )
    client = await connect(settings, connection=connection)
    assert client.namespace == "default"
    assert await client.service_client.check_health()


def _cases(pki: Pki, stranger: Pki, proxy: GrpcTlsProxy) -> list[tuple[str, dict[str, str], str]]:
    """(address, TEMPORAL_* variables, the setting the error must name)."""
    return [
        (proxy.mtls_address, _tls_env(pki), "TEMPORAL_TLS_CLIENT_CERT_PATH"),
        (proxy.mtls_address, _tls_env(pki, client=stranger), "TEMPORAL_TLS_CLIENT_CERT_PATH"),
        (
            proxy.tls_address,
            {"TEMPORAL_TLS_SERVER_NAME": SERVER_NAME},
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
        ),
        (
            proxy.tls_address,
            {"TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca_pem)},
            "TEMPORAL_TLS_SERVER_NAME",
        ),
        (proxy.tls_address, {}, "TEMPORAL_TLS=true"),
        (proxy.api_key_address, _tls_env(pki), "TEMPORAL_API_KEY"),
    ]


async def test_a_refused_setting_is_named_by_connect(
    settings: Settings, proxy: GrpcTlsProxy, pki: Pki, stranger: Pki, temporal_server: DevServer
) -> None:
    cases = [
        *_cases(pki, stranger, proxy),
        # TLS towards a server that speaks plain text.
        (temporal_server.address, _tls_env(pki), "TEMPORAL_TLS=false"),
    ]
    for address, env, named in cases:
        at = settings.model_copy(update={"temporal_address": address})
        with pytest.raises(TemporalConnectionError) as refused:
            await connect(at, connection=load_connection(at, _environ(**env)))
        assert named in str(refused.value), (address, env, str(refused.value))
        assert "\n" not in str(refused.value)


@pytest.mark.parametrize("tls", ["false", "true"])
async def test_a_server_that_never_answers_is_not_waited_for_forever(
    settings: Settings, tls: str
) -> None:
    """It accepts the connection and says nothing (no TLS handshake, no gRPC answer): the
    connect gives up within the RPC timeout, as "not reachable" (the worker retries, the API
    starts and answers 502), never as a setting to change, and never hangs."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    at = settings.model_copy(
        update={"temporal_address": f"127.0.0.1:{port}", "temporal_rpc_timeout_seconds": 1.0}
    )
    try:
        with pytest.raises(RuntimeError) as gave_up:
            await asyncio.wait_for(
                connect(at, connection=load_connection(at, _environ(TEMPORAL_TLS=tls))),
                START_WITHIN_SECONDS,
            )
    finally:
        server.close()
        for writer in held:
            writer.close()
    assert "did not answer within 1 s" in str(gave_up.value)
    assert "CAMPAIGN_ENGINE_TEMPORAL_RPC_TIMEOUT_SECONDS" in str(gave_up.value)


@pytest.mark.parametrize("speaks", ["tls", "plain"])
async def test_a_server_that_hangs_up_on_plain_text_is_told_by_whether_it_speaks_tls(
    settings: Settings, pki: Pki, speaks: str
) -> None:
    """A TLS port often answers a plain-text connection by closing it (nginx does so now and
    then): the SDK then reports only "connection closed". When the address answers TLS, the
    error names TEMPORAL_TLS=true; a plain-text server that hangs up is "not reachable"."""
    context: ssl.SSLContext | None = None
    if speaks == "tls":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.server_pem, pki.server_key)

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    at = settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"})
    try:
        with pytest.raises((RuntimeError, TemporalConnectionError)) as refused:
            await asyncio.wait_for(
                connect(at, connection=load_connection(at, _environ())), START_WITHIN_SECONDS
            )
    finally:
        server.close()
    if speaks == "tls":
        assert isinstance(refused.value, TemporalConnectionError), refused.value
        assert "TEMPORAL_TLS=true" in str(refused.value)
    else:
        assert not isinstance(refused.value, TemporalConnectionError), refused.value


async def _start_and_exit(command: str, settings: Settings, env: dict[str, str]) -> tuple[int, str]:
    """Runs `campaign-engine <command>` with these settings and TEMPORAL_* variables until it
    exits (bounded); returns its exit code and standard error."""
    variables = {
        **_environ(**env),
        "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": settings.temporal_address,
        "CAMPAIGN_ENGINE_STATE_DIR": str(settings.state_dir),
        "CAMPAIGN_ENGINE_API_PORT": str(free_port()),
        "CAMPAIGN_ENGINE_API_METRICS_PORT": "0",
        "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("campaign-engine")),
        command,
        env=variables,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), START_WITHIN_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize("command", ["worker", "api"])
async def test_without_the_right_settings_worker_and_api_stop_at_start_in_one_line(
    command: str, settings: Settings, proxy: GrpcTlsProxy, pki: Pki, stranger: Pki
) -> None:
    cases = _cases(pki, stranger, proxy)
    if command == "api":
        # The API's check is the same code: two cases show it is made at all.
        cases = [cases[0], cases[-1]]
    for address, env, named in cases:
        at = settings.model_copy(update={"temporal_address": address})
        code, stderr = await _start_and_exit(command, at, env)
        lines = [line for line in stderr.splitlines() if line.strip()]
        # Log lines are JSON; the refusal is the one plain line.
        plain = [line for line in lines if not line.startswith("{")]
        assert code == 2, (command, env, stderr)
        assert len(plain) == 1 and "Traceback" not in stderr, stderr
        assert plain[0].startswith("campaign-engine: Temporal at ") and named in plain[0], stderr


# --- the compose file's certificates ----------------------------------------------------------


def _make_certs(directory: Path) -> None:
    subprocess.run(
        [str(ROOT / "deploy/temporal/make-certs.sh"), str(directory)],
        check=True,
        capture_output=True,
    )


async def test_make_certs_issues_what_mtls_between_our_processes_needs(
    settings: Settings, temporal_server: DevServer, tmp_path: Path
) -> None:
    """deploy/temporal/make-certs.sh's certificates, served by nginx as Temporal's frontend
    serves them in the compose file: our client certificate gets in, for the name `temporal`."""
    directory = Path(tempfile.mkdtemp(prefix="ce-certs-"))
    try:
        certs = directory / "certs"
        await asyncio.to_thread(_make_certs, certs)
        assert (certs / "ca/ca.key").stat().st_mode & 0o077 == 0
        served = Pki(
            directory=certs / "server",
            ca_pem=certs / "server/ca.pem",
            server_pem=certs / "server/cluster.pem",
            server_key=certs / "server/cluster.key",
            client_pem=certs / "client/client.pem",
            client_key=certs / "client/client.key",
        )
        proxy = _proxy(directory / "nginx", temporal_server.address, served)
        try:
            at = settings.model_copy(update={"temporal_address": proxy.mtls_address})
            env = {
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(certs / "client/ca.pem"),
                "TEMPORAL_TLS_CLIENT_CERT_PATH": str(certs / "client/client.pem"),
                "TEMPORAL_TLS_CLIENT_KEY_PATH": str(certs / "client/client.key"),
                "TEMPORAL_TLS_SERVER_NAME": "temporal",
            }
            client = await connect(at, connection=load_connection(at, _environ(**env)))
            assert await client.service_client.check_health()
            assert any(
                '"CN=campaign-engine"' in line for line in proxy.access_lines(proxy.mtls_port)
            )
        finally:
            proxy.stop()
        # Run again, it keeps what it made.
        before = (certs / "client/client.pem").read_bytes()
        await asyncio.to_thread(_make_certs, certs)
        assert (certs / "client/client.pem").read_bytes() == before
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- make dev ----------------------------------------------------------------------------------


async def test_dev_talks_to_its_own_server_whatever_the_shell_points_at(
    tmp_path: Path, pki: Pki
) -> None:
    """`make dev` needs nothing: an operator's Temporal Cloud variables in the same shell (an API
    key, TLS, a CA, another address and namespace) do not reach its own dev server."""
    api_port = free_port()
    env = {
        **_environ(
            TEMPORAL_ADDRESS="elsewhere.tmprl.cloud:7233",
            TEMPORAL_NAMESPACE="elsewhere.a1b2c",
            TEMPORAL_API_KEY=API_KEY,
            TEMPORAL_TLS="true",
            TEMPORAL_TLS_SERVER_CA_CERT_PATH=str(pki.ca_pem),
        ),
        "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path / "var"),
        "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "CAMPAIGN_ENGINE_TEMPORAL_UI_PORT": str(free_port()),
        "CAMPAIGN_ENGINE_API_PORT": str(api_port),
        "CAMPAIGN_ENGINE_API_METRICS_PORT": "0",
        "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("campaign-engine")),
        "dev",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:

            async def ready() -> int | None:
                assert process.returncode is None, "dev exited"
                try:
                    return (await http.get("/readyz")).status_code
                except httpx.TransportError:
                    return None

            await assert_eventually(ready, lambda code: code == 200, within=90, what="/readyz")
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 60)
    assert process.returncode == 0
