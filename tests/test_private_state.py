"""Files and settings (issue 24, items 7 and 8): local state only its owner reads, secrets that
never print, and `campaign-engine dev` honouring an explicit `false` for the codec exemption."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import re
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from pydantic import SecretStr

from activities.outbox import FileOutbox
from campaign_engine import secret_policy
from campaign_engine.ids import workflow_id_for
from campaign_engine.settings import ImapSettings, MailboxLimits, SecretUrl, Settings
from campaign_engine.store import Store
from entrypoints.dev import workflow_ui_url
from entrypoints.devserver import free_port

CLI = str(Path(sys.executable).with_name("campaign-engine"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """The usual umask of a shell (022): what made the files 0644 before."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


# --- files --------------------------------------------------------------------------------------


async def test_sqlite_store_its_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    database = tmp_path / "var" / "campaign-engine.db"
    with umask(0o022):
        store = await Store.open(f"sqlite+aiosqlite:///{database}")
        try:
            await store.ping()
            await store.revoke_api_key("nothing")  # a write: the WAL is in use
            side = [database.with_name(database.name + end) for end in ("-wal", "-shm")]
            assert all(path.exists() for path in side), list(database.parent.iterdir())
            assert mode(database.parent) == 0o700
            for path in (database, *side):
                assert mode(path) == 0o600, (path, oct(mode(path)))
        finally:
            await store.close()


async def test_a_store_left_readable_by_an_earlier_version_is_narrowed(tmp_path: Path) -> None:
    database = tmp_path / "campaign-engine.db"
    with umask(0o022):
        store = await Store.open(f"sqlite+aiosqlite:///{database}")
        await store.close()
        database.chmod(0o644)
        store = await Store.open(f"sqlite+aiosqlite:///{database}")
        await store.close()
    assert mode(database) == 0o600


def test_outbox_messages_are_owner_only(tmp_path: Path) -> None:
    outbox = FileOutbox(tmp_path / "var" / "outbox")
    with umask(0o022):
        assert outbox.deliver("<a.b.intro@campaign-engine>", b"Subject: hi\r\n\r\nbody\r\n")
    [message] = (tmp_path / "var" / "outbox").iterdir()
    assert mode(message) == 0o600
    assert mode(tmp_path / "var" / "outbox") == mode(tmp_path / "var") == 0o700


async def test_a_command_narrows_a_state_dir_left_open(tmp_path: Path) -> None:
    state = tmp_path / "var"
    (state / "outbox").mkdir(parents=True)
    state.chmod(0o755)
    (state / "outbox").chmod(0o755)
    process = await asyncio.create_subprocess_exec(
        CLI,
        "keys",
        "list",
        env={"PATH": os.environ["PATH"], "CAMPAIGN_ENGINE_STATE_DIR": str(state)},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err
    assert mode(state) == mode(state / "outbox") == 0o700
    assert mode(state / "campaign-engine.db") == 0o600


# --- settings -----------------------------------------------------------------------------------

SECRETS = {
    "api_key_pepper": "pepper-0f9c2b7e5d1a4c3b8e6f0a9d2c7b5e1f",
    "unsubscribe_key": "unsub-7d3e9a1c5b2f8e4d0c6a9b3f1e7d5c2a",
    "payload_keys": "k1:xgq0sEAHIB+kPV9DJurS1ldwMWCpBu0wpvt+cvqEHI8=",
    "smtp_password": "smtp-hunter2-smtp",
}


def test_settings_never_print_a_secret() -> None:
    settings = Settings(
        **{name: SecretStr(value) for name, value in SECRETS.items()},  # type: ignore[arg-type]
        database_url=SecretUrl("postgresql+asyncpg://campaigns:db-hunter2-db@db.internal:5432/c"),
        rate_limit_storage_uri=SecretUrl("redis://:redis-hunter2-redis@redis:6379/0?db=1"),
        mailboxes={
            "sales@acme.example": MailboxLimits(
                account_groups="*",
                imap=ImapSettings(
                    host="imap.example", username="u", password=SecretStr("imap-hunter2-imap")
                ),
            )
        },
    )
    shown = [repr(settings), str(settings), settings.model_dump_json()]
    for text in shown:
        for secret in (
            *SECRETS.values(),
            "db-hunter2-db",
            "redis-hunter2-redis",
            "imap-hunter2-imap",
            "xgq0sEAHIB",
        ):
            assert secret not in text, secret
    # The hosts still show (what an operator reading a log needs), the passwords as ***.
    assert "postgresql+asyncpg://campaigns:***@db.internal:5432/c" in shown[0]
    assert "redis://:***@redis:6379/0?***" in shown[0]
    # Every secret setting is a SecretStr; the code reads the text where it needs it.
    for name in (*SECRETS, "database_url", "rate_limit_storage_uri"):
        assert isinstance(getattr(settings, name), SecretStr), name
    assert settings.resolved_database_url.endswith("db-hunter2-db@db.internal:5432/c")
    assert "redis-hunter2-redis" in settings.resolved_rate_limit_storage_uri


# --- campaign-engine dev ------------------------------------------------------------------------


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _read_until(path: Path, pattern: str, process: asyncio.subprocess.Process) -> str:
    for _ in range(1200):
        text = _text(path)
        if re.search(pattern, text):
            return text
        assert process.returncode is None, text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{pattern!r} never appeared:\n{_text(path)}")


async def test_dev_makes_its_own_secrets_keeps_state_private_and_honours_codec_false(
    tmp_path: Path,
) -> None:
    """`make dev` with nothing set generates its secrets and runs; every file it leaves is
    owner-only (the delivered message too); an explicit
    `CAMPAIGN_ENGINE_CODEC_ALLOW_LOCAL_UI_WITHOUT_KEY=false` keeps the local UI's codec calls
    behind a key; and what a recipient reads in Message-ID and List-Id opens nothing."""
    state = tmp_path / "var"
    api_port, ui_port = free_port(), free_port()
    env = {
        "PATH": os.environ["PATH"],
        "CAMPAIGN_ENGINE_STATE_DIR": str(state),
        "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "CAMPAIGN_ENGINE_TEMPORAL_UI_PORT": str(ui_port),
        "CAMPAIGN_ENGINE_API_PORT": str(api_port),
        "CAMPAIGN_ENGINE_API_METRICS_PORT": "0",
        "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": "0",
        "CAMPAIGN_ENGINE_CODEC_ALLOW_LOCAL_UI_WITHOUT_KEY": "false",
    }
    log = tmp_path / "dev.log"
    with umask(0o022), log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            CLI, "dev", env=env, stdout=output, stderr=output, start_new_session=True
        )
    try:
        text = await _read_until(log, r"Ctrl-C stops everything", process)
        key = re.search(r"Demo key\s+(ce_\S+)", text)
        approve = re.search(r"-X POST -H .*? (http://\S+/approve)", text)
        assert key and approve, text
        # Every id printed says what it is, and each demo instance has its Web UI link (the
        # form tests/test_codec_ui.py opens in Chromium).
        group, campaign, instance = approve.group(1).removesuffix("/approve").split("/")[-5::2]
        assert f"Campaign id  {campaign} (account group id {group})" in text, text
        assert re.search(rf"key id \S+, account group id {group}\)", text), text
        assert re.search(rf"workflow instance id +{instance}\n", text), text
        link = workflow_ui_url(
            f"http://127.0.0.1:{ui_port}", "default", workflow_id_for(group, campaign, instance)
        )
        assert re.search(rf"Web UI +{re.escape(link)}\n", text), text
        assert len(re.findall(r"^  Web UI +http://", text, re.MULTILINE)) == 2, text
        assert len(re.findall(r"lead id +\w{24}\n", text)) == 2, text
        headers = {"Authorization": f"Bearer {key.group(1)}"}
        base = f"http://127.0.0.1:{api_port}"
        async with httpx.AsyncClient(timeout=30) as http:
            # The codec exemption stays off: the UI's own origin, from loopback, without a key.
            local_ui = {"Origin": f"http://127.0.0.1:{ui_port}", "Content-Type": "application/json"}
            codec = await http.post(
                f"{base}/codec/decode", content=json.dumps({"payloads": []}), headers=local_ui
            )
            assert codec.status_code == 401, codec.text

            approved = await http.post(approve.group(1), headers=headers)
            assert approved.status_code == 200, approved.text
            outbox = state / "outbox"
            for _ in range(300):
                sent = sorted(outbox.glob("*.eml")) if outbox.exists() else []
                if sent:
                    break
                await asyncio.sleep(0.1)
            [message_file] = sent

            # Every file and directory `make dev` left is its owner's alone.
            for path in (state, *state.rglob("*")):
                expected = 0o700 if path.is_dir() else 0o600
                assert mode(path) == expected, (path, oct(mode(path)))
            # Its generated secrets pass the policy it starts under.
            assert secret_policy.refusals(Settings(state_dir=state)) == []

            # Message-ID and List-Id name the account group and campaign (kept: README,
            # "Security"), never the lead or the address; the ids open nothing without a key
            # of that account group.
            message = email.message_from_bytes(
                message_file.read_bytes(), policy=email.policy.default
            )
            instance_url = approve.group(1).removesuffix("/approve")
            group, campaign, instance = instance_url.split("/")[-5::2]
            lead_id = re.search(r"lead id +(\w{24})\n", text)
            assert lead_id
            for header in ("Message-ID", "List-Id"):
                value = str(message[header])
                assert group in value and campaign in value, value
                assert lead_id.group(1) not in value and "ada@" not in value.lower(), value
            assert (await http.get(instance_url)).status_code == 401
            other = await asyncio.create_subprocess_exec(
                CLI,
                "keys",
                "create",
                "--account-group",
                "0" * 23 + "1",
                "--permission",
                "campaigns:read",
                env=env,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await other.communicate()
            other_key = json.loads(out)["key"]
            foreign = await http.get(instance_url, headers={"Authorization": f"Bearer {other_key}"})
            assert foreign.status_code == 403, foreign.text
            assert instance in str(message["Message-ID"])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
