"""No credential in telemetry: a full flow through the production processes with traces
exported, then every log line, every exported span and every metric searched for each secret.

`campaign-engine api` and `campaign-engine worker` run as deployed (JSON logs), with
`OTEL_TRACES_EXPORTER=console`: the OpenTelemetry SDK's own console exporter writes every span,
attributes and events included, to the process's output, which the test captures with the logs.
The flow: a key created and used, a wrong key, a campaign enrolled, approved and delivered over
SMTP with a password and a DKIM signature; the unsubscribe link of the delivered message fetched,
with a slash too many, and used; the codec endpoints called with forwarded access tokens (JWTs)
that verify, have expired and lack the scope; three IMAP readers logging in with a password, a
wrong password and an OAuth2 token. The secrets searched for: API keys (the right one and the
wrong one), the unsubscribe token, the JWTs, the payload keys, the DKIM private key, the key
pepper and unsubscribe key, the SMTP password, the IMAP passwords and the OAuth2 token.

Also here: the Temporal dev server we start gets only the environment a program needs, so
`OTEL_TRACES_EXPORTER=console`, meant for us, no longer makes it exit (`make dev` failed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from campaign_engine.settings import Settings
from campaign_engine.store import Store
from devsupport.dovecot import Dovecot, ImapBox
from devsupport.servers import JwksServer, SmtpSink
from entrypoints.children import child_environment, die_with_parent
from entrypoints.devserver import DevServer, free_port
from tests import services
from tests.helpers import Api, Campaign, approve_ok, assert_eventually, create_campaign
from tests.helpers.campaigns import enrol_to_gate
from tests.keys import TEST_KEY, TEST_KEY_ID

ISSUER = "https://login.acme.example/"
AUDIENCE = "temporal-ui"
CODEC_REQUEST = Path(__file__).with_name("codec_ui_request.json")
ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts" / "telemetry-secrets"


def _token(private_key: Any, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ops@acme", "iat": now, "exp": now + 300}
    return jwt.encode({**body, **claims}, private_key, algorithm="RS256", headers={"kid": "idp-1"})


def _pem_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM key: any one of them in the output would be a leak."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


async def _dovecot_logged(dovecot: Dovecot, *fragments: str) -> bool:
    text = dovecot.log_file.read_text(errors="replace") if dovecot.log_file.exists() else ""
    return all(fragment in text for fragment in fragments)


@pytest.fixture
def smtp_with_password() -> Any:
    sink = SmtpSink(credentials=("mailer", f"smtp-password-{secrets.token_hex(12)}"))
    sink.start()
    yield sink
    sink.stop()


async def test_a_full_flow_exports_no_credential_in_logs_spans_or_metrics(
    settings: Settings,
    smtp_with_password: SmtpSink,
    dovecot: Dovecot,
    imap_box: ImapBox,
    tmp_path: Path,
) -> None:
    sink = smtp_with_password
    assert sink.credentials is not None
    smtp_user, smtp_password = sink.credentials

    # --- secrets, each distinctive ------------------------------------------------------------
    payload_key = base64.b64encode(secrets.token_bytes(32)).decode()
    pepper = f"pepper-{secrets.token_hex(32)}"
    unsubscribe_key = f"unsubscribe-key-{secrets.token_hex(32)}"
    dkim_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dkim_pem = dkim_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    dkim_path = tmp_path / "dkim.pem"
    dkim_path.write_bytes(dkim_pem)
    dkim_path.chmod(0o600)

    wrong_imap_user = f"w{uuid.uuid4().hex[:12]}@example.test"
    dovecot.add_user(wrong_imap_user, uuid.uuid4().hex)
    wrong_imap_password = f"imap-wrong-{secrets.token_hex(12)}"
    oauth_user = f"o{uuid.uuid4().hex[:12]}@example.test"
    dovecot.add_user(oauth_user, uuid.uuid4().hex)
    oauth_token = f"ya29.{secrets.token_urlsafe(40)}"
    assert dovecot.introspection is not None
    dovecot.introspection.add(oauth_token, oauth_user)
    token_file = tmp_path / "imap-token"
    token_file.write_text(oauth_token)
    imap = {"host": "127.0.0.1", "port": dovecot.plain_port, "security": "none"}
    mailboxes = {
        imap_box.user: {
            "account_groups": "*",
            "imap": {**imap, "username": imap_box.user, "password": imap_box.password},
        },
        wrong_imap_user: {
            "account_groups": "*",
            "imap": {**imap, "username": wrong_imap_user, "password": wrong_imap_password},
        },
        oauth_user: {
            "account_groups": "*",
            "imap": {**imap, "username": oauth_user, "access_token_file": str(token_file)},
        },
    }

    idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(idp_key.public_key(), as_dict=True)
    idp = JwksServer(keys=[{**jwk, "kid": "idp-1", "use": "sig", "alg": "RS256"}])
    await idp.start()
    granted_jwt = _token(idp_key, scope="openid payloads:decode")
    expired_jwt = _token(idp_key, scope="payloads:decode", exp=int(time.time()) - 600)
    no_scope_jwt = _token(idp_key, scope="openid profile")

    settings = settings.model_copy(
        update={
            # Ours encrypts; the test key decrypts the Web UI's captured codec request.
            "payload_keys": SecretStr(f"leak-test:{payload_key},{TEST_KEY_ID}:{TEST_KEY}"),
            "api_key_pepper": pepper,
            "unsubscribe_key": SecretStr(unsubscribe_key),
            "delivery": "smtp",
            "smtp_port": sink.port,
            "smtp_username": smtp_user,
            "smtp_password": SecretStr(smtp_password),
            "dkim_selector": "leaktest",
            "dkim_domain": "example.com",
            "dkim_private_key_path": dkim_path,
            "codec_oidc_jwks_url": idp.url,
            "codec_oidc_issuer": ISSUER,
            "codec_oidc_audience": AUDIENCE,
            "api_metrics_port": free_port(),
            "worker_metrics_port": free_port(),
            "log_level": "DEBUG",
        }
    )
    telemetry = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_SERVICE_NAME": "leak-test",
        # Every request and response header captured on the spans, as an operator may ask:
        # the credential headers must come out redacted.
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": ".*",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": ".*",
        "CAMPAIGN_ENGINE_LOG_FORMAT": "json",
        "CAMPAIGN_ENGINE_MAILBOXES": json.dumps(mailboxes),
    }
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    base = f"http://127.0.0.1:{settings.api_port}"
    answers: list[httpx.Response] = []
    metrics: list[str] = []

    store = await Store.open(settings.resolved_database_url)
    try:
        async with (
            services.cli_process(settings, "worker", log=worker_log, env=telemetry),
            services.cli_process(settings, "api", log=api_log, env=telemetry) as api_process,
            httpx.AsyncClient(base_url=base, timeout=30) as http,
        ):
            await services.wait_until_serving(api_process, base, api_log, within=60)
            api = Api(settings, store, http, server=None)  # type: ignore[arg-type]
            campaign: Campaign = await create_campaign(api)
            api_key = campaign.key.key

            # A key, right and wrong, in both headers.
            wrong_key = f"ce_{campaign.key.id}_{secrets.token_urlsafe(32)}"
            answers.append(await http.get(campaign.url, headers={"X-API-Key": wrong_key}))
            answers.append(
                await http.get(campaign.url, headers={"Authorization": f"Bearer {wrong_key}"})
            )
            answers.append(await http.get(campaign.url, headers={"X-API-Key": api_key}))

            # Enrol, approve, deliver over SMTP with the password, DKIM-signed.
            instance_id = await enrol_to_gate(api, campaign)
            await approve_ok(api, campaign, instance_id)

            async def delivered() -> bool:
                return bool(sink.received())

            await assert_eventually(delivered, within=30)
            assert sink.logins == [smtp_user]
            [message] = sink.received()
            assert "DKIM-Signature" in message
            found = re.search(r"/u/([A-Za-z0-9_\-.~%]+)>", str(message["List-Unsubscribe"]))
            assert found, message["List-Unsubscribe"]
            unsubscribe_token = found.group(1)

            # The link as scanners and people use it, a slash too many, a forged one.
            answers.append(await http.get(f"/u/{unsubscribe_token}"))
            answers.append(await http.get(f"/u/{unsubscribe_token}/"))
            answers.append(await http.get(f"/u/{unsubscribe_token}?utm_source={pepper[:4]}"))
            answers.append(await http.get(f"/u/{unsubscribe_token[:-4]}AAAA"))
            one_click = await http.post(
                f"/u/{unsubscribe_token}",
                content="List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert one_click.status_code == 200, one_click.text

            # Forwarded access tokens at the codec endpoints.
            captured = json.loads(CODEC_REQUEST.read_text())
            for token, status in [(granted_jwt, 200), (expired_jwt, 401), (no_scope_jwt, 403)]:
                answer = await http.post(
                    captured["path"],
                    content=captured["body"],
                    headers={**captured["headers"], "Authorization": f"Bearer {token}"},
                )
                assert answer.status_code == status, answer.text
                answers.append(answer)

            # The IMAP readers: one logs in with its password, one is refused, one uses OAuth2.
            await assert_eventually(
                lambda: _dovecot_logged(
                    dovecot, f"user=<{imap_box.user}>", f"user=<{oauth_user}>", wrong_imap_user
                ),
                within=60,
            )
            for port in (settings.api_metrics_port, settings.worker_metrics_port):
                metrics.append((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
    finally:
        await store.close()
        await idp.stop()

    output = api_log.read_text(errors="replace") + worker_log.read_text(errors="replace")
    # Kept for a person to read when this fails: what was searched.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "process-output.txt").write_text(output)
    # The spans were exported (so searching them means something): the request spans by route
    # template, the Temporal calls, the delivery.
    assert '"name": "GET /u/{token}"' in output, output[-3000:]
    assert '"name": "POST /u/{token}"' in output
    assert '"http.route": "/u/{token}"' in output
    assert "RunActivity:deliver_message" in output
    assert '"logger": "campaign_engine.api"' in output
    assert '"http.request.header.authorization": [' in output
    assert '"http.request.header.x_api_key": [' in output

    searched = {
        "api key": [api_key],
        "wrong api key": [wrong_key],
        "unsubscribe token": [unsubscribe_token],
        "granted jwt": [granted_jwt, granted_jwt.split(".")[2]],
        "expired jwt": [expired_jwt, expired_jwt.split(".")[2]],
        "no-scope jwt": [no_scope_jwt, no_scope_jwt.split(".")[2]],
        "payload keys": [payload_key, TEST_KEY],
        "dkim private key": _pem_lines(dkim_pem),
        "key pepper": [pepper],
        "unsubscribe key": [unsubscribe_key],
        "smtp password": [smtp_password],
        "imap password": [imap_box.password],
        "wrong imap password": [wrong_imap_password],
        "oauth token": [oauth_token],
    }
    errors = "\n".join(answer.text for answer in answers if answer.status_code >= 400)
    corpus = {"process output": output, "metrics": "\n".join(metrics), "error answers": errors}
    leaks = [
        f"{name} in {where}: …{text[max(0, text.find(secret) - 200) : text.find(secret) + 50]}…"
        for name, values in searched.items()
        for secret in values
        for where, text in corpus.items()
        if secret in text
    ]
    assert leaks == []


def test_the_dev_server_gets_only_what_a_program_needs() -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "TMPDIR": "/tmp",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer secret",
        "CAMPAIGN_ENGINE_PAYLOAD_KEYS": "k1:secret",
        "CAMPAIGN_ENGINE_SMTP_PASSWORD": "secret",
        "TEMPORAL_ADDRESS": "prod.tmprl.cloud:7233",
        "TEMPORAL_API_KEY": "secret",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "PATHEXT": "x",
    }

    assert child_environment(environ) == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "TMPDIR": "/tmp",
    }


def _environment_names(pid: int) -> set[str]:
    """The names of a process's environment variables, from /proc/<pid>/environ."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return {entry.split(b"=", 1)[0].decode() for entry in entries if entry}


async def test_the_dev_server_starts_with_otel_console_exporter_in_our_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`OTEL_TRACES_EXPORTER=console make dev`: the dev server used to inherit the variable,
    refuse it and exit 1. Now it starts, and its environment holds none of ours."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "campaign-engine-dev")
    monkeypatch.setenv("CAMPAIGN_ENGINE_PAYLOAD_KEYS", "k1:c2VjcmV0")
    server = DevServer()
    await server.start()
    try:
        assert server.pid is not None
        names = _environment_names(server.pid)
    finally:
        await server.stop()

    assert not {name for name in names if name.startswith(("OTEL_", "CAMPAIGN_ENGINE_"))}
    assert "PATH" in names or "PATH" not in os.environ


async def test_make_dev_runs_with_otel_console_exporter(tmp_path: Path) -> None:
    """The whole `campaign-engine dev` (what `make dev` runs) with the console exporter: the
    dev server, worker and API come up and the demo is seeded."""
    temporal_port, ui_port, api_port = free_port(), free_port(), free_port()
    env = {
        name: value for name, value in os.environ.items() if not name.startswith("CAMPAIGN_ENGINE_")
    }
    env.update(
        {
            "OTEL_TRACES_EXPORTER": "console",
            "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path / "var"),
            "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
            "CAMPAIGN_ENGINE_TEMPORAL_UI_PORT": str(ui_port),
            "CAMPAIGN_ENGINE_API_PORT": str(api_port),
            "CAMPAIGN_ENGINE_API_METRICS_PORT": "0",
            "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": "0",
        }
    )
    log = tmp_path / "dev.log"
    process = await asyncio.create_subprocess_exec(
        *die_with_parent([services.CLI, "dev"]),
        env=env,
        stdout=log.open("wb"),
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await services.wait_until_serving(process, f"http://127.0.0.1:{api_port}", log, within=90)

        async def seeded() -> bool:
            return "curl" in log.read_text(errors="replace") or process.returncode is not None

        await assert_eventually(seeded, within=90)
        assert process.returncode is None, log.read_text(errors="replace")[-3000:]
    finally:
        if process.returncode is None:
            process.send_signal(2)  # Ctrl-C: stops the API, the worker, then Temporal
            try:
                async with asyncio.timeout(60):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
    text = log.read_text(errors="replace")
    assert "temporal server exited" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
