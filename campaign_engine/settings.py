"""The one settings class, read from `CAMPAIGN_ENGINE_*` environment variables."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from limits import parse as parse_rate
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from campaign_engine.addresses import InvalidAddress, parse_mailbox
from campaign_engine.ids import is_object_id
from campaign_engine.mailboxes import MailboxPolicy
from campaign_engine.send_windows import parse_zone

MAX_UNSUBSCRIBE_BASE_URL_CHARS = 200
"""Bounds the unsubscribe URL a template may place (`activities.templates` checks for it)."""


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class SecretUrl(SecretStr):
    """A URL that may carry a password (`postgresql+asyncpg://user:password@host/db`,
    `redis://:password@host:6379`): a `SecretStr` whose `repr` and `str` show the URL with the
    password, and any query, as `***` (`postgresql+asyncpg://user:***@host/db`), so a logged or
    printed `Settings` keeps the host but never the password. Text that does not parse as a URL
    shows as `SecretStr` does, all stars."""

    def _display(self) -> str:
        value = self.get_secret_value()
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            return "**********" if value else ""
        if "@" not in parts.netloc and "@" in value:
            return "**********"  # an `@` outside the URL's authority: hide it all
        if not parts.scheme or ("@" not in parts.netloc and not parts.query):
            return value  # no user information, no query: nothing secret to hide (`memory://`)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = parts.username or ""
        userinfo = f"{user}:***@" if parts.password is not None else (f"{user}@" if user else "")
        location = userinfo + host + (f":{port}" if port is not None else "")
        return f"{parts.scheme}://{location}{parts.path}" + ("?***" if parts.query else "")


def reveal(value: SecretStr | str | None) -> str | None:
    """The text of a secret setting. A plain `str` comes back as it is: `model_copy(update=…)`
    does not validate, so a copy may hold one where a `SecretStr` is declared."""
    if value is None or isinstance(value, str):
        return value
    return value.get_secret_value()


class ImapSettings(BaseModel):
    """How to read one sending mailbox over IMAP (its `imap` block in `CAMPAIGN_ENGINE_MAILBOXES`).

    Exactly one credential: `password` (LOGIN), or an OAuth2 access token for SASL XOAUTH2 read
    afresh at every login from `access_token_file` (a file a sidecar keeps fresh) or from the
    standard output of `access_token_command` (an argv list, run without a shell). The folder is
    opened read-only (EXAMINE): nothing is ever flagged, moved or deleted. Read by
    `inbound.imap.ImapReader`.
    """

    # A refused block must not print its input: it holds the password (the CLI prints the error).
    # `Settings` hides inputs too; this covers an `ImapSettings` validated on its own.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    host: str = Field(min_length=1, max_length=253, description="The IMAP server's host name.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Default 993 for `tls`, 143 otherwise."
    )
    security: Literal["tls", "starttls", "none"] = Field(
        default="tls",
        description="`tls`: implicit TLS (port 993); `starttls`: a plain connection upgraded "
        "before login; `none`: plain text, credentials in clear (local test servers only).",
    )
    username: str = Field(min_length=1, max_length=320)
    password: SecretStr | None = None
    access_token_file: Path | None = Field(
        default=None,
        description="A file holding a current OAuth2 access token (surrounding whitespace "
        "ignored), re-read at every login.",
    )
    access_token_command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="A command (argv list, no shell) printing a current OAuth2 access token on "
        "standard output, run at every login; it must exit 0 within `timeout_seconds`.",
    )
    folder: str = Field(default="INBOX", min_length=1, max_length=200)
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle the server's certificate must chain to; default: the "
        "system's trust store.",
    )
    idle: bool = Field(
        default=True,
        description="Wait for new mail with IDLE (RFC 2177) where the server offers it; off, or "
        "where it does not, poll every `poll_interval_seconds`.",
    )
    poll_interval_seconds: float = Field(default=60.0, ge=1, le=3600)
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Connect and per-command timeout."
    )
    backfill_days: int = Field(
        default=7,
        ge=0,
        le=365,
        description="On the first read of a mailbox, messages received this many days back are "
        "read too (replies that arrived before the reader started); older ones never are.",
    )

    @field_validator("host")
    @classmethod
    def _host_is_a_name(cls, host: str) -> str:
        if _CONTROL_CHARACTERS.search(host) or " " in host:
            raise ValueError("host must be a host name or address, without spaces")
        return host

    @field_validator("username", "folder")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        # A control character would end or split an IMAP command line or the XOAUTH2 string.
        if _CONTROL_CHARACTERS.search(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("access_token_command")
    @classmethod
    def _command_has_a_program(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and not command[0].strip():
            raise ValueError("the first element must name a program")
        return command

    @model_validator(mode="after")
    def _one_credential(self) -> ImapSettings:
        given = [
            name
            for name in ("password", "access_token_file", "access_token_command")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of password, access_token_file, access_token_command"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def resolved_port(self) -> int:
        """`port`, else 993 for `tls` and 143 for `starttls` and `none`."""
        if self.port is not None:
            return self.port
        return 993 if self.security == "tls" else 143


ALL_ACCOUNT_GROUPS = "*"
"""`account_groups` of a mailbox every account group may send from (a single-tenant deployment,
or a deliberately shared mailbox): written out, never a default."""


class MailboxLimits(BaseModel):
    """One sending mailbox's owners and limits, as `CAMPAIGN_ENGINE_MAILBOXES` gives them (JSON).

    `account_groups` (required): the account groups (24-hex ids) whose campaigns may send from
    it, or `"*"` for every group. A mailbox is one tenant's sending identity and daily cap: a
    campaign of another group naming it is refused at PUT (400 on `from`) and its deliveries
    fail (`ActivityErrorType.SENDER_NOT_ALLOWED`). There is no default: an entry without it is
    refused at start, so no mailbox is shared by omission.
    `daily_cap`: messages per local day of `time_zone` (None: no cap); `minimum_spacing_seconds`:
    at least this long between two of its messages. A send over either is deferred, never failed.
    `imap`: how to read the mailbox's incoming mail (None: it is not read).
    """

    model_config = ConfigDict(extra="forbid")

    account_groups: list[str] | Literal["*"] = Field(
        description='The account groups that may send from this mailbox (24-hex ids), or "*" '
        "for every group. Required."
    )
    daily_cap: int | None = Field(default=None, ge=1, le=1_000_000)
    minimum_spacing_seconds: float = Field(default=0.0, ge=0, le=86_400)
    time_zone: str = Field(default="UTC", description="Where the mailbox's day begins (IANA).")
    imap: ImapSettings | None = None

    @field_validator("time_zone")
    @classmethod
    def _a_zone(cls, time_zone: str) -> str:
        # An `InvalidWindow`, a ValueError, when not a zone; a link ("US/Eastern") is kept
        # under its canonical name ("America/New_York"), as the API stores zones.
        return parse_zone(time_zone, "time_zone").key

    @field_validator("account_groups")
    @classmethod
    def _group_ids(cls, groups: list[str] | Literal["*"]) -> list[str] | Literal["*"]:
        if groups == ALL_ACCOUNT_GROUPS:
            return groups
        if not groups:
            raise ValueError('account_groups: name at least one account group, or "*" for all')
        for group in groups:
            if not is_object_id(group):
                raise ValueError(f"account_groups: {group[:40]!r} is not a 24-hex account group id")
        return sorted(set(groups))

    def allows(self, account_group_id: str) -> bool:
        """Whether campaigns of `account_group_id` may send from this mailbox."""
        return self.account_groups == ALL_ACCOUNT_GROUPS or account_group_id in self.account_groups


class Settings(BaseSettings):
    """Every setting, from `CAMPAIGN_ENGINE_<NAME>` environment variables (no .env file).

    Invalid values raise pydantic's `ValidationError` at construction; the CLI then exits 2.
    """

    # Errors name the field, never echo its input: the CLI prints them, and inputs hold
    # passwords and keys (an `imap` block's password, SMTP_PASSWORD, PAYLOAD_KEYS).
    model_config = SettingsConfigDict(
        env_prefix="CAMPAIGN_ENGINE_", env_file=None, hide_input_in_errors=True
    )

    state_dir: Path = Field(
        default=Path("var"),
        description="Local state of the embedded defaults: SQLite store, Temporal dev server "
        "database, file outbox, generated API-key pepper.",
    )
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    task_queue: str = "campaigns"
    temporal_rpc_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest the API waits on Temporal (signal, query, start) before a 502.",
    )
    temporal_blob_size_limit_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=2 * 1024 * 1024,
        description="Temporal's payload size limit (`limit.blobSize.error`, 2 MiB by default): "
        "campaigns whose instances would not fit under it are refused at PUT. Raise it only "
        "with the server's; a draft alone takes up to 1.2 MB.",
    )
    database_url: SecretUrl | None = Field(
        default=None,
        description="SQLAlchemy async URL; default a SQLite file under state_dir. Its password "
        "never shows in `repr` (`SecretUrl`); read it through `resolved_database_url`.",
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_key_pepper: SecretStr | None = Field(
        default=None,
        description="Secret mixed into every stored API-key hash; generated under state_dir "
        "on first use when unset.",
    )
    api_key_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="How long an API process trusts a key it verified, without asking the store "
        "again; a revoked key is refused by every process within this long. 0 asks every time.",
    )
    rate_limit: str = Field(
        default="120/minute",
        description="Per-API-key request budget, in the `limits` library's notation.",
    )
    enrolment_rate_limit: str = Field(
        default="20000/minute",
        description="Per-API-key budget of leads enrolled through `POST …/workflow-instances/"
        "batch` (each row counts one; the request itself counts one against `RATE_LIMIT`), "
        "in the `limits` library's notation: the default serves 1,000-row batches back to "
        "back at 20 a minute.",
    )
    rate_limit_storage_uri: SecretUrl = Field(
        default=SecretUrl("memory://"),
        description="Where rate-limit counters live (`limits` storage URI): `memory://` per "
        "process, `redis://host:6379` shared by every API process (a password in it never "
        "shows in `repr`; read it through `resolved_rate_limit_storage_uri`).",
    )
    rate_limit_storage_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Longest a request waits on the rate-limit storage; past it, or when the "
        "storage is down, the request goes through unlimited and a warning is logged.",
    )
    auth_failure_limit: str = Field(
        default="60/minute",
        description="Failed authentications (401s) allowed per client address, in the `limits` "
        "notation; past it every request from that address needing authentication is a 429 "
        "until the window moves. Counted in `rate_limit_storage_uri`.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (comma-separated, e.g. `10.0.0.5,10.1.0.0/16`; `*` "
        "for any) of reverse proxies whose `X-Forwarded-For` names the client address. Empty: "
        "the address is the socket's peer and the header is ignored.",
    )
    readiness_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Longest /readyz waits on Temporal and on the store before calling one down.",
    )
    api_shutdown_timeout_seconds: int = Field(
        default=15,
        ge=0,
        description="On SIGTERM the API stops accepting and lets in-flight requests finish for "
        "at most this long.",
    )
    worker_shutdown_timeout_seconds: float = Field(
        default=25.0,
        ge=0,
        description="On SIGTERM the worker stops polling and lets running activities finish for "
        "at most this long before cancelling them.",
    )
    render_budget_seconds: float = Field(
        default=5.0,
        gt=0,
        description="CPU seconds a campaign's templates may take together when a PUT checks "
        "them (each template also has its own 1 s deadline); past it the PUT is a 400 naming "
        "the budget (`activities.templates.check_templates`).",
    )
    render_queue_limit: int = Field(
        default=1000,
        ge=1,
        description="Templates that may wait for a render process in one API or worker "
        "process, all account groups together; past it a PUT is a 503 with Retry-After and a "
        "draft is retried (`activities.render_queue`).",
    )
    render_queue_limit_per_group: int = Field(
        default=200,
        ge=1,
        description="Templates one account group may have waiting for a render process in one "
        "API or worker process (its fair share of the queue); past it as for "
        "`render_queue_limit`.",
    )
    delivery: Literal["outbox", "smtp"] = Field(
        default="outbox",
        description="How messages leave: files in the outbox (embedded default) or SMTP.",
    )
    outbox_dir: Path | None = Field(
        default=None, description="File outbox for delivered messages; default state_dir/outbox."
    )
    sender: str = Field(
        default="Campaign Engine <campaigns@localhost>",
        description="`From:` of every message: `Display Name <local@domain>` or `local@domain`. "
        "The local part must be ASCII; the domain may be a host name such as `localhost`; a "
        "display name with characters other than letters, digits and spaces goes in double "
        "quotes. Refused at start when it is not such an address. It is the deployment's shared "
        "sender: what a campaign without `from` sends as, usable by every account group (a "
        "single-tenant deployment, or mail every tenant may send under the operator's name). "
        "To reserve it, list it in CAMPAIGN_ENGINE_MAILBOXES with its `account_groups`.",
    )
    mailboxes: dict[str, MailboxLimits] = Field(
        default_factory=dict,
        description="The sending mailboxes a campaign may name as its `from`, with the account "
        'groups that may send from each and their limits, as JSON: `{"sales@example.com": '
        '{"account_groups": ["65f0c0ffee0000000000000a"], "daily_cap": 50, '
        '"minimum_spacing_seconds": 120, "time_zone": "America/New_York"}}` (`"account_groups": '
        '"*"` for every group). `account_groups` is required: an entry without it is refused at '
        "start. The sender's address is usable by every group unless it is listed here (then its "
        "entry's groups and limits apply). A From address is the deployment's sending identity "
        "(SPF, DKIM, the SMTP account), so it is set here, beside the DKIM key, not by API "
        "callers.",
    )
    unsubscribe_base_url: str | None = Field(
        default=None,
        description="Public base URL of the API that serves `/u/{token}`, e.g. "
        "`https://mail.example.com` (https in production: RFC 8058 one-click needs it). "
        "Default: the local API (`http://HOST:PORT` of `CAMPAIGN_ENGINE_API_HOST` and "
        "`CAMPAIGN_ENGINE_API_PORT`), which is what `make dev` uses.",
    )
    unsubscribe_mailbox: str | None = Field(
        default=None,
        description="An ASCII address for the `mailto:` form of List-Unsubscribe (RFC 2369); "
        "its subject carries the token. Unset: only the https form.",
    )
    unsubscribe_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of unsubscribe tokens and of suppressed e-mail hashes; generated "
        "under state_dir on first use when unset. API and worker must share it.",
    )
    bounce_domain: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
        description="VERP: when set, every message goes out with the envelope sender "
        "`BOUNCE_LOCAL_PART+TOKEN@BOUNCE_DOMAIN` (`campaign_engine/verp.py`), so a bounce that "
        "returns nothing of the original still names its message. Mail to that domain must "
        "reach an inbound source (an IMAP mailbox that catches `+` addresses, or the HTTP "
        "endpoint). Unset: the envelope sender is the From address.",
    )
    bounce_local_part: str = Field(
        default="bounces",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$",
        description="The local part of VERP envelope senders, before the `+`.",
    )
    inbound_max_message_bytes: int = Field(
        default=25_000_000,
        ge=1_000,
        le=25_000_000,
        description="The largest inbound message accepted (bytes; 25 MB is what mailbox "
        "providers accept): `POST .../inbound-messages` answers 413 above it, the IMAP reader "
        "records a larger message as refused and moves on.",
    )
    inbound_soft_bounce_limit: int = Field(
        default=3,
        ge=1,
        le=100,
        description="This many soft bounces of one address within "
        "`inbound_soft_bounce_window_days` count as a hard bounce (the address is suppressed).",
    )
    inbound_soft_bounce_window_days: int = Field(default=7, ge=1, le=90)
    dkim_selector: str | None = Field(
        default=None, description="DKIM selector (RFC 6376 s=), e.g. `ce2026`."
    )
    dkim_domain: str | None = Field(
        default=None,
        description="DKIM signing domain (d=); align it with the sender's domain for DMARC.",
    )
    dkim_private_key_path: Path | None = Field(
        default=None,
        description="PEM RSA private key (`campaign-engine dkim init` makes one). With selector "
        "and domain set, every message is signed; unset, mail goes unsigned with one warning.",
    )
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="none",
        description="`starttls` upgrades a plain connection; `tls` connects over TLS (port 465).",
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Per attempt, for pending-approval notifications."
    )
    webhook_allow_private_addresses: bool = Field(
        default=False,
        description="Let webhooks reach loopback, private and link-local addresses. Off: a "
        "campaign author could otherwise make the worker call internal services (SSRF). On only "
        "for a receiver on your own machine or network (development, tests).",
    )
    worker_workflow_sandbox: bool = Field(
        default=False,
        description="Run workflow code in the Temporal SDK's sandbox (a fresh import of the "
        "workflow module per new or replayed instance and a copy of it per cached one, run-time "
        "checks against clocks, randomness and I/O). Off (the default), workflows run "
        "unsandboxed: less CPU per workflow task and a fraction of the memory per cached "
        "instance; determinism then rests on the static check of `workflows/` in `make test` "
        "(tests/test_workflow_determinism_rules.py) and on the replay suite and the test suite, "
        "which run every workflow sandboxed. See docs/performance.md.",
    )
    worker_max_cached_workflows: int | None = Field(
        default=None,
        ge=0,
        description="Workflows a worker keeps in memory between tasks (the SDK's sticky cache). "
        "Bounds the worker's memory however many instances wait at gates; an evicted instance "
        "is replayed from history on its next task. Unset: 10,000 unsandboxed, 1,000 with "
        "`WORKER_WORKFLOW_SANDBOX` (~280 KB per cached instance there). See "
        "docs/performance.md.",
    )
    worker_versioning: bool = Field(
        default=True,
        description="Run workers as versions of a Temporal Worker Deployment, so a task only "
        "ever reaches workers of the build its deployment makes current. Off only for a "
        "Temporal server without Worker Deployments: workers then poll unversioned.",
    )
    worker_deployment_name: str = Field(
        default="campaign-engine",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$",
        description="The Worker Deployment every worker of this system belongs to: letters, "
        "digits, `_` and `-` (no `.`: Temporal writes a version as `<deployment>.<build id>`).",
    )
    worker_build_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$",
        description="This release's build id within the deployment. Unset: the package version "
        "and a hash of the `workflows` package sources (`worker.versioning.default_build_id`), "
        "so changed workflow code is always a new build id.",
    )
    worker_become_current: Literal["if-none", "always", "never"] = Field(
        default="if-none",
        description="What a starting worker does about its build becoming the deployment's "
        "current version (the one that gets tasks): `if-none` makes it current only when the "
        "deployment has none yet (the first deploy); `always` makes it current (`make dev`); "
        "`never` leaves that to `campaign-engine deployment set-current`.",
    )
    payload_keys: SecretStr | None = Field(
        default=None,
        description="Key ring that encrypts Temporal payloads (AES-256-GCM): comma-separated "
        "`id:base64key` entries of 32-byte keys; the first encrypts, all decrypt. Unset: one key "
        "generated under state_dir (`payload-keys`) on first use.",
    )
    payload_encryption: bool = Field(
        default=True,
        description="Encrypt Temporal payloads. Off only to measure the codec's cost (`make "
        "bench ARGS=--no-encryption`): lead data then lies in clear in Temporal.",
    )
    payload_codec_strict: bool = Field(
        default=True,
        description="Refuse Temporal payloads nobody encrypted with the payload keys (or sealed "
        "for another account group than their workflow's): a workflow started with such an "
        "input fails `PlaintextPayloadRefused` and does nothing, an `approve` signal with one "
        "is refused. On everywhere but `make dev` (which turns it off unless set): whoever "
        "reaches Temporal's frontend without a key then cannot make a campaign send.",
    )
    codec_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins (comma-separated, e.g. `http://localhost:8080`) of Temporal "
        "Web UIs allowed to call the codec endpoints `/codec/decode` and `/codec/encode`.",
    )
    codec_allow_local_ui_without_key: bool = Field(
        default=False,
        description="Let the dev server's own Web UI (origin http://127.0.0.1 or localhost at "
        "temporal_ui_port, from a loopback peer) use the codec endpoints without an API key. "
        "On in `make dev` only (unless set there, `false` included): any local process can "
        "claim that origin.",
    )
    codec_oidc_jwks_url: str | None = Field(
        default=None,
        description="JWKS URL of the identity provider of a Web UI with its own login that "
        "forwards access tokens to the codec (TEMPORAL_CODEC_PASS_ACCESS_TOKEN=true). Set it "
        "with codec_oidc_issuer and codec_oidc_audience; unset, only API keys are accepted.",
    )
    codec_oidc_issuer: str | None = Field(
        default=None, description="The `iss` forwarded access tokens must carry."
    )
    codec_oidc_audience: str | None = Field(
        default=None, description="The `aud` forwarded access tokens must carry."
    )
    codec_oidc_scope: str = Field(
        default="payloads:decode",
        description="What a forwarded access token must grant (in `scope`/`scp`, `permissions` "
        "or `roles`) to use the codec endpoints.",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="`json`: one object per line (default of `api` and `worker`); `text`: plain "
        "lines with key=value fields (default of `dev`).",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Interface the Prometheus `/metrics` endpoints bind to."
    )
    api_metrics_port: int | None = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the API process's Prometheus `/metrics`; 0 turns it off.",
    )
    worker_metrics_port: int | None = Field(
        default=9465,
        ge=0,
        le=65535,
        description="Port of the worker process's Prometheus `/metrics` (Temporal SDK metrics); "
        "0 turns it off.",
    )

    @field_validator("payload_keys")
    @classmethod
    def _payload_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            # Imported here: the codec module imports this one.
            from campaign_engine.codec import parse_key_ring

            parse_key_ring(value.get_secret_value())
        return value

    @field_validator("auth_failure_limit")
    @classmethod
    def _a_rate(cls, rate: str) -> str:
        try:
            parse_rate(rate)
        except ValueError:
            raise ValueError("must be a rate such as 60/minute") from None
        return rate

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies_split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [proxy.strip() for proxy in value.split(",") if proxy.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            if proxy != "*":
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError:
                    raise ValueError(
                        "each entry must be an IP address, a network (CIDR) or *"
                    ) from None
        return proxies

    @field_validator("codec_cors_origins", mode="before")
    @classmethod
    def _origins_split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _codec_oidc_complete(self) -> Settings:
        oidc = (self.codec_oidc_jwks_url, self.codec_oidc_issuer, self.codec_oidc_audience)
        if any(oidc) and not all(oidc):
            raise ValueError(
                "set codec_oidc_jwks_url, codec_oidc_issuer and codec_oidc_audience together"
            )
        return self

    @field_validator("sender")
    @classmethod
    def _sender_is_a_mailbox(cls, sender: str) -> str:
        try:
            parse_mailbox(sender)
        except InvalidAddress as error:
            raise ValueError(f"CAMPAIGN_ENGINE_SENDER is not a usable address: {error}") from error
        return sender

    @field_validator("mailboxes")
    @classmethod
    def _mailbox_addresses(cls, mailboxes: dict[str, MailboxLimits]) -> dict[str, MailboxLimits]:
        normalized: dict[str, MailboxLimits] = {}
        for text, limits in mailboxes.items():
            try:
                address = parse_mailbox(text).address
            except InvalidAddress as error:
                raise ValueError(f"CAMPAIGN_ENGINE_MAILBOXES: {text!r}: {error}") from error
            normalized[address.normalized.lower()] = limits
        return normalized

    def mailbox_policies(self) -> dict[str, MailboxPolicy]:
        """Each configured mailbox's `MailboxPolicy`, by lowercase address."""
        return {
            address: MailboxPolicy(
                address=address,
                daily_cap=limits.daily_cap,
                minimum_spacing=timedelta(seconds=limits.minimum_spacing_seconds),
                time_zone=ZoneInfo(limits.time_zone),
            )
            for address, limits in self.mailboxes.items()
        }

    def sending_address(self, mailbox: str | None) -> str:
        """The lowercase address a campaign's `from` sends as (the sender's when None); raises
        `InvalidAddress` when it is no address."""
        return parse_mailbox(mailbox or self.sender).address.normalized.lower()

    def sending_groups(self) -> dict[str, frozenset[str] | None]:
        """Who may send from each usable address (lowercase): every configured mailbox's
        `account_groups` (None: every group), and the shared `sender`'s address, open to every
        group unless it is itself listed in `mailboxes` (then its entry rules)."""
        groups: dict[str, frozenset[str] | None] = {self.sending_address(None): None}
        for address, limits in self.mailboxes.items():
            groups[address] = (
                None
                if limits.account_groups == ALL_ACCOUNT_GROUPS
                else frozenset(limits.account_groups)
            )
        return groups

    @field_validator("unsubscribe_base_url")
    @classmethod
    def _base_url_is_http(cls, url: str | None) -> str | None:
        if url is None:
            return None
        url = url.rstrip("/")
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/\-]*)?", url):
            raise ValueError(
                "CAMPAIGN_ENGINE_UNSUBSCRIBE_BASE_URL must be an http(s) URL without query, "
                "spaces or angle brackets"
            )
        if len(url) > MAX_UNSUBSCRIBE_BASE_URL_CHARS:
            raise ValueError(
                f"CAMPAIGN_ENGINE_UNSUBSCRIBE_BASE_URL is longer than "
                f"{MAX_UNSUBSCRIBE_BASE_URL_CHARS} characters"
            )
        return url

    @field_validator("unsubscribe_mailbox")
    @classmethod
    def _mailbox_is_ascii_address(cls, mailbox: str | None) -> str | None:
        if mailbox is None:
            return None
        try:
            address = parse_mailbox(mailbox).address
        except InvalidAddress as error:
            raise ValueError(f"CAMPAIGN_ENGINE_UNSUBSCRIBE_MAILBOX: {error}") from error
        if not address.wire.isascii() or len(address.wire) > 200:
            raise ValueError("CAMPAIGN_ENGINE_UNSUBSCRIBE_MAILBOX must be a short ASCII address")
        return address.wire

    @property
    def resolved_max_cached_workflows(self) -> int:
        """`worker_max_cached_workflows`, else what the runner can hold: 10,000 instances
        unsandboxed (every lead of a campaign of 10,000 waiting, so an approval never replays;
        docs/performance.md, "The worker's cache"), 1,000 in the sandbox (each cached instance
        keeps its own copy of the workflow module there)."""
        if self.worker_max_cached_workflows is not None:
            return self.worker_max_cached_workflows
        return 1000 if self.worker_workflow_sandbox else 10_000

    @property
    def resolved_unsubscribe_base_url(self) -> str:
        """Where `/u/{token}` is served: the setting, else the local API."""
        return self.unsubscribe_base_url or f"http://{self.api_host}:{self.api_port}"

    # Plain properties, not cached: `model_copy(update=...)` copies a cached value along, so a
    # copy with another database_url or state_dir would still answer the original's.
    @property
    def resolved_database_url(self) -> str:
        """`database_url` (its text, password included), else a SQLite file
        `campaign-engine.db` under `state_dir`."""
        return (
            reveal(self.database_url)
            or f"sqlite+aiosqlite:///{self.state_dir / 'campaign-engine.db'}"
        )

    @property
    def resolved_rate_limit_storage_uri(self) -> str:
        """`rate_limit_storage_uri` as text, password included."""
        return reveal(self.rate_limit_storage_uri) or "memory://"

    @property
    def resolved_outbox_dir(self) -> Path:
        """`outbox_dir`, else `<state_dir>/outbox`."""
        return self.outbox_dir or self.state_dir / "outbox"


def settings_error_lines(error: ValidationError | SettingsError) -> list[str]:
    """One line per refused setting, naming its environment variable and, inside a JSON
    setting, the path to the value (`CAMPAIGN_ENGINE_MAILBOXES: sales@acme.example →
    account_groups: Field required`). Never the input: settings hold secrets. A
    `SettingsError` (JSON that does not parse) is one line as pydantic-settings words it."""
    prefix = Settings.model_config.get("env_prefix", "")
    if isinstance(error, SettingsError):
        text = str(error).splitlines()[0] if str(error) else repr(error)
        field = re.search(r'field "(\w+)"', text)
        if field is not None:
            return [f"{prefix}{field.group(1).upper()}: not valid JSON"]
        return [text]
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        location = [str(part) for part in problem["loc"]]
        variable = f"{prefix}{location[0].upper()}" if location else "settings"
        inside = " → ".join(location[1:])
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{variable}: {inside + ': ' if inside else ''}{message}")
    return lines
