"""The one place that builds a Temporal client, for the API, the worker, the CLI and the bench.

Where to connect, and how, is read the way every Temporal tool reads it (the `temporal` CLI, the
SDKs: `temporalio.envconfig`), from lowest to highest precedence:

1. built-in defaults: `127.0.0.1:7233`, namespace `default`, no TLS;
2. a profile of the TOML file the CLI reads (`TEMPORAL_CONFIG_FILE`, default
   `~/.config/temporalio/temporal.toml`; profile `TEMPORAL_PROFILE`, default `default`);
3. the `TEMPORAL_*` environment variables (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
   `TEMPORAL_API_KEY`, `TEMPORAL_TLS`, `TEMPORAL_TLS_SERVER_CA_CERT_PATH`/`_DATA`,
   `TEMPORAL_TLS_CLIENT_CERT_PATH`/`_DATA`, `TEMPORAL_TLS_CLIENT_KEY_PATH`/`_DATA`,
   `TEMPORAL_TLS_SERVER_NAME`, `TEMPORAL_GRPC_META_<NAME>`);
4. our own `CAMPAIGN_ENGINE_TEMPORAL_ADDRESS` and `CAMPAIGN_ENGINE_TEMPORAL_NAMESPACE`, when set.

An API key turns TLS on (Temporal Cloud) unless `TEMPORAL_TLS=false`; the SDK sends it as
`authorization: Bearer <key>` on every call. A setting that cannot work (a file that does not
exist, a certificate the server refuses, a CA that did not sign the server's certificate) raises
`TemporalConnectionError`, whose message is one line naming the setting; a server that is merely
not reachable yet raises the SDK's `RuntimeError` (the worker waits, the API starts and answers
502 until it is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, Interceptor
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from campaign_engine.codec import data_converter
from campaign_engine.observability import tracing_enabled
from campaign_engine.settings import Settings
from campaign_engine.temporal_tracing import CampaignTracingInterceptor

logger = logging.getLogger(__name__)

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


class TemporalConnectionError(Exception):
    """A Temporal connection setting that cannot work; `str()` is one line naming the setting.

    Not a `RuntimeError`: callers that wait for an unreachable server (the SDK raises
    `RuntimeError` for that) must not wait for this one, which no wait mends.
    """


@dataclass(frozen=True)
class TemporalConnection:
    """Where and how to connect, resolved from every source (see the module docstring).

    `tls` is False, True (system roots) or the SDK's `TLSConfig`; `api_key` is sent as a bearer
    token. `config_file` and `profile` say which file and profile were read (for messages).
    """

    address: str
    namespace: str
    tls: bool | TLSConfig = False
    api_key: str | None = field(default=None, repr=False)
    rpc_metadata: Mapping[str, str] = field(default_factory=dict, repr=False)
    config_file: Path | None = None
    profile: str = "default"

    @classmethod
    def plain(cls, settings: Settings) -> TemporalConnection:
        """The settings' address and namespace, no TLS, nothing read from the environment or a
        file: `make dev` talks to the dev server it started, whatever the shell has set."""
        return cls(address=settings.temporal_address, namespace=settings.temporal_namespace)

    @property
    def tls_enabled(self) -> bool:
        """Whether the connection uses TLS."""
        return self.tls is not False

    @property
    def client_certificate(self) -> bool:
        """Whether a client certificate (mTLS) is configured."""
        return isinstance(self.tls, TLSConfig) and self.tls.client_cert is not None


T = TypeVar("T")


async def bounded_call(call: Awaitable[T], rpc_timeout: timedelta) -> T:
    """`call` (a client call made with `rpc_timeout`), bounded as a whole: the RPC timeout
    bounds one attempt, and the client retries an unreachable server on its own for longer (and
    a lazy client connects first). Raises `TimeoutError` one second after `rpc_timeout`."""
    return await asyncio.wait_for(call, rpc_timeout.total_seconds() + 1)


def without_temporal_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with no `TEMPORAL_*` variable and no config file (`/dev/null`): for the
    processes of a tool that starts its own dev server (`make dev`, the bench, the tests), which
    must not reach for the cluster the shell is set up for."""
    kept = {name: value for name, value in environ.items() if not name.startswith("TEMPORAL_")}
    return {**kept, "TEMPORAL_CONFIG_FILE": os.devnull}


def _default_config_file(env: Mapping[str, str]) -> Path:
    """Where the CLI and the SDKs look when `TEMPORAL_CONFIG_FILE` is unset (Linux: the XDG
    config directory)."""
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "temporalio" / "temporal.toml"


def _check_variables(env: Mapping[str, str]) -> None:
    """Refuses what the SDK would silently ignore or misread."""
    named = env.get("TEMPORAL_CONFIG_FILE")
    if named and not Path(named).exists():
        # envconfig falls back to defaults for a missing file: a typo would go unnoticed.
        raise TemporalConnectionError(f"TEMPORAL_CONFIG_FILE: {named} does not exist")
    tls = env.get("TEMPORAL_TLS")
    if tls is not None and tls.strip().lower() not in _TRUE | _FALSE:
        raise TemporalConnectionError(f"TEMPORAL_TLS must be true or false, not {tls!r}")
    verification = env.get("TEMPORAL_TLS_DISABLE_HOST_VERIFICATION", "").strip().lower()
    if verification in _TRUE:
        # The Python SDK has no such switch; pretending would verify anyway, or worse.
        raise TemporalConnectionError(
            "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION is not supported by the Python SDK: set "
            "TEMPORAL_TLS_SERVER_NAME to a name the server's certificate holds"
        )


def _file_setting(filename: object, env: Mapping[str, str], profile: str) -> str:
    """The variable (or the profile) that named a file that could not be read."""
    for name in (
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
        "TEMPORAL_TLS_CLIENT_CERT_PATH",
        "TEMPORAL_TLS_CLIENT_KEY_PATH",
    ):
        if env.get(name) == str(filename):
            return name
    return f"a tls path of profile {profile!r}"


def _tls_source(kind: str, env: Mapping[str, str], profile: str) -> str:
    """The variable that gave this TLS file (`kind`: SERVER_CA_CERT, CLIENT_CERT, CLIENT_KEY),
    or the profile when no variable did."""
    for suffix in ("_PATH", "_DATA"):
        if env.get(f"TEMPORAL_TLS_{kind}{suffix}"):
            return f"TEMPORAL_TLS_{kind}{suffix}"
    return f"the tls of profile {profile!r}"


def _check_tls(tls: bool | TLSConfig, env: Mapping[str, str], profile: str) -> None:
    """Refuses TLS material the SDK would take and then fail on at connect time, where it reads
    as "not reachable" and the worker would wait for ever: a certificate without its key (or a
    key without its certificate), and files that hold no PEM certificate or key."""
    if not isinstance(tls, TLSConfig):
        return
    if (tls.client_cert is None) != (tls.client_private_key is None):
        given, missing = (
            ("CLIENT_CERT", "CLIENT_KEY")
            if tls.client_cert is not None
            else ("CLIENT_KEY", "CLIENT_CERT")
        )
        raise TemporalConnectionError(
            f"{_tls_source(given, env, profile)} is set but TEMPORAL_TLS_{missing}_PATH is not: "
            "mTLS needs both the client certificate and its private key"
        )
    checks: list[tuple[str, bytes | None, Callable[[bytes], object], str]] = [
        ("SERVER_CA_CERT", tls.server_root_ca_cert, x509.load_pem_x509_certificates, "certificate"),
        ("CLIENT_CERT", tls.client_cert, x509.load_pem_x509_certificates, "certificate"),
        (
            "CLIENT_KEY",
            tls.client_private_key,
            lambda data: serialization.load_pem_private_key(data, password=None),
            "unencrypted private key",
        ),
    ]
    for kind, data, load, what in checks:
        if data is None:
            continue
        try:
            load(data)
        except (ValueError, TypeError):
            raise TemporalConnectionError(
                f"{_tls_source(kind, env, profile)}: holds no PEM {what}"
            ) from None


def load_connection(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> TemporalConnection:
    """Resolves the connection from the profile file, `TEMPORAL_*` variables and `settings`, in
    that order of precedence (`environ` defaults to the process environment).

    Raises `TemporalConnectionError` (one line naming the setting) for a config file, profile or
    certificate file that cannot be read, and for values the SDK would ignore.
    """
    env = dict(os.environ if environ is None else environ)
    _check_variables(env)
    profile_name = env.get("TEMPORAL_PROFILE") or "default"
    config_file = Path(env["TEMPORAL_CONFIG_FILE"]) if env.get("TEMPORAL_CONFIG_FILE") else None
    where = f"{config_file or _default_config_file(env)} (TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE)"
    try:
        profile = ClientConfigProfile.load(override_env_vars=env)
        config = profile.to_client_connect_config()
    except FileNotFoundError as error:
        raise TemporalConnectionError(
            f"{_file_setting(error.filename, env, profile_name)}: {error.filename} does not exist"
        ) from None
    except OSError as error:
        raise TemporalConnectionError(
            f"{_file_setting(error.filename, env, profile_name)}: cannot read {error.filename}: "
            f"{error.strerror}"
        ) from None
    except RuntimeError as error:  # the bridge's ConfigError: TOML syntax, unknown profile
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise TemporalConnectionError(f"{where}: {first_line}") from None
    _check_tls(config.get("tls", False), env, profile_name)
    if config.get("api_key") and config.get("tls", False) is False:
        # Allowed (a local proxy may add TLS), but the key then crosses the wire in clear.
        logger.warning(
            "TEMPORAL_API_KEY is sent without TLS (TEMPORAL_TLS=false): anyone on the path can "
            "read it; unset TEMPORAL_API_KEY if this server needs none"
        )
    explicit = settings.model_fields_set
    address = (
        settings.temporal_address
        if "temporal_address" in explicit
        else config.get("target_host") or settings.temporal_address
    )
    namespace = (
        settings.temporal_namespace
        if "temporal_namespace" in explicit
        else config.get("namespace") or settings.temporal_namespace
    )
    return TemporalConnection(
        address=address,
        namespace=namespace,
        tls=config.get("tls", False),
        api_key=config.get("api_key"),
        rpc_metadata=dict(config.get("rpc_metadata", {})),
        config_file=config_file,
        profile=profile_name,
    )


_EXPECTS_TLS = (
    "{at} expects TLS; set TEMPORAL_TLS=true "
    "(and TEMPORAL_TLS_SERVER_CA_CERT_PATH for a private CA)"
)


def _explain(error: BaseException, connection: TemporalConnection) -> str | None:
    """One line naming the setting to change when `error` (from connecting or the first call)
    comes from the connection's settings, None when the server is only not reachable (yet)."""
    text = str(error)
    at = f"Temporal at {connection.address}"
    if isinstance(error, RPCError) and error.status == RPCStatusCode.NOT_FOUND:
        return (
            f"{at}: namespace {connection.namespace!r} does not exist "
            "(CAMPAIGN_ENGINE_TEMPORAL_NAMESPACE, TEMPORAL_NAMESPACE)"
        )
    if "UnknownIssuer" in text:
        return (
            f"{at}: its certificate is not signed by a CA this process trusts; set "
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH to the CA that signed it"
        )
    if "NotValidForName" in text:
        return (
            f"{at}: its certificate does not name the host dialled; set "
            "TEMPORAL_TLS_SERVER_NAME to a name the certificate holds"
        )
    if "InvalidContentType" in text or "InvalidMessage" in text:
        return (
            f"{at} does not speak TLS, but TLS is on (TEMPORAL_TLS, TEMPORAL_API_KEY or the "
            "profile's tls); set TEMPORAL_TLS=false or point TEMPORAL_ADDRESS at its TLS port"
        )
    if not connection.tls_enabled and ("h2 protocol error" in text or "FRAME_SIZE_ERROR" in text):
        return _EXPECTS_TLS.format(at=at)
    refused_certificate = any(
        marker in text
        for marker in ("400 Bad Request", "CertificateRequired", "BadCertificate", "UnknownCA")
    ) or ("HandshakeFailure" in text and connection.tls_enabled)
    if refused_certificate:
        if not connection.client_certificate:
            return (
                f"{at} requires a client certificate (mTLS); set TEMPORAL_TLS_CLIENT_CERT_PATH "
                "and TEMPORAL_TLS_CLIENT_KEY_PATH"
            )
        return (
            f"{at} refused the client certificate of TEMPORAL_TLS_CLIENT_CERT_PATH (not signed "
            "by a CA it trusts, expired, or not for client authentication)"
        )
    unauthenticated = "401 Unauthorized" in text or (
        isinstance(error, RPCError)
        and error.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED)
    )
    if unauthenticated or "Unauthenticated" in text or "PermissionDenied" in text:
        if connection.api_key is None:
            return f"{at} refused a call without credentials; set TEMPORAL_API_KEY"
        return (
            f"{at} refused the API key of TEMPORAL_API_KEY (unknown, expired, or without "
            f"access to namespace {connection.namespace!r})"
        )
    return None


async def _speaks_tls(address: str, within_seconds: float) -> bool:
    """True when the server at `address` (`host:port`) answers a TLS ClientHello as a TLS server
    does: a finished handshake or a TLS alert. A plain-text server hangs up, answers bytes that
    are not a TLS record, or says nothing within `within_seconds`: False. Nothing is verified;
    this only tells a plain-text connection refused by a TLS port from a server going away."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    writer: asyncio.StreamWriter | None = None
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port), ssl=context), within_seconds
        )
        return True
    except ssl.SSLError as error:
        # An alert (a client certificate required, a protocol refused) comes from a TLS server.
        return "ALERT" in str(error.reason or "").upper()
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def connect(
    settings: Settings,
    *,
    lazy: bool = False,
    runtime: Runtime | None = None,
    connection: TemporalConnection | None = None,
) -> Client:
    """Connects to the configured namespace (`connection`, default `load_connection(settings)`).

    Unless `lazy`, it also asks for the namespace, so a wrong setting is found now, bounded by
    `settings.temporal_rpc_timeout_seconds`: `TemporalConnectionError` (one line naming the
    setting) for a setting the server refused, the SDK's `RuntimeError` for a server that is not
    reachable. `lazy` defers the connection to the first call: the API then starts (and answers
    502) while Temporal is down instead of refusing to start. `runtime` carries the worker's
    metrics. When the process traces, the client (and every worker built from it) propagates the
    trace through signals, queries, starts, the workflow and its activities. Every payload it
    writes is encrypted, and every one it reads decrypted, under the settings' payload key ring
    (`campaign_engine.codec`); a malformed ring raises `campaign_engine.codec.KeyRingError`.
    """
    connection = connection or load_connection(settings)
    interceptors: list[Interceptor] = [CampaignTracingInterceptor()] if tracing_enabled() else []
    timeout = timedelta(seconds=settings.temporal_rpc_timeout_seconds)
    try:
        # `connect_timeout` bounds the TCP connection only: a server that accepts and then says
        # nothing (a TLS handshake or `GetSystemInfo` never answered) held a connect for 30 s
        # in plain text and longer with TLS. The whole connect gets the bound.
        client = await asyncio.wait_for(
            Client.connect(
                connection.address,
                namespace=connection.namespace,
                tls=connection.tls,
                api_key=connection.api_key,
                rpc_metadata=connection.rpc_metadata,
                lazy=lazy,
                connect_timeout=timeout,
                interceptors=interceptors,
                runtime=runtime,
                data_converter=data_converter(settings),
            ),
            timeout.total_seconds(),
        )
        if not lazy:
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=connection.namespace), timeout=timeout
            )
    except TimeoutError:
        # Not reachable as it should be (the worker waits, the API starts): not a setting.
        raise RuntimeError(
            f"Temporal at {connection.address} did not answer within "
            f"{timeout.total_seconds():g} s (CAMPAIGN_ENGINE_TEMPORAL_RPC_TIMEOUT_SECONDS)"
        ) from None
    except (RuntimeError, RPCError) as error:
        explained = _explain(error, connection)
        if (
            explained is None
            and not connection.tls_enabled
            and not isinstance(error, RPCError)
            and await _speaks_tls(connection.address, timeout.total_seconds())
        ):
            # A TLS port answers a plain-text HTTP/2 preface with a protocol error or, as often,
            # by closing the connection ("connection closed"): only a TLS probe tells which.
            explained = _EXPECTS_TLS.format(at=f"Temporal at {connection.address}")
        if explained is not None:
            raise TemporalConnectionError(explained) from None
        if isinstance(error, RPCError):
            # Refused for a reason that names no setting: not reachable as it should be.
            raise RuntimeError(f"Temporal at {connection.address}: {error.message}") from error
        raise
    return client


async def check_connection(settings: Settings) -> bool:
    """The API's start-up check: True when Temporal answers with these settings, False (logged)
    when it is not reachable yet; raises `TemporalConnectionError` for a setting it refused."""
    connection = load_connection(settings)
    try:
        await connect(settings, connection=connection)
    except RuntimeError as error:
        logger.warning(
            "Temporal at %s not reachable (%s); starting anyway, answering 502 until it is",
            connection.address,
            error,
        )
        return False
    return True


async def connect_with_retry(
    settings: Settings, stop: asyncio.Event, *, runtime: Runtime | None = None
) -> Client | None:
    """Waits for Temporal instead of crashing; None when asked to stop first. A setting the
    server refused is not waited for: `TemporalConnectionError` (see `connect`)."""
    connection = load_connection(settings)
    delay = 0.5
    while not stop.is_set():
        try:
            return await connect(settings, runtime=runtime, connection=connection)
        except RuntimeError as error:
            logger.warning(
                "Temporal at %s not reachable (%s); retrying in %.1f s",
                connection.address,
                error,
                delay,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 10.0)
    return None
