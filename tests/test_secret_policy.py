"""No placeholder runs (issue 24, item 5): placeholder, example and weak secrets stop every
command at start, exit 2, one line naming each setting; what the generators make runs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from pydantic import SecretStr

from campaign_engine import secret_policy, unsubscribe
from campaign_engine.codec import load_key_ring, new_key
from campaign_engine.keys import PEPPER_FILE, load_pepper
from campaign_engine.settings import ImapSettings, MailboxLimits, SecretUrl, Settings
from entrypoints.devserver import free_port, port_in_use

ROOT = Path(__file__).parent.parent
CLI = str(Path(sys.executable).with_name("campaign-engine"))


def env_example() -> dict[str, str]:
    """The variables of `.env.example`, as `docker compose` reads them."""
    variables = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value.strip()
    return variables


def compose_env(state_dir: Path) -> dict[str, str]:
    """What compose gives the api from an unedited `.env` (`cp .env.example .env`)."""
    example = env_example()
    env = {name: value for name, value in example.items() if name.startswith("CAMPAIGN_ENGINE_")}
    env["CAMPAIGN_ENGINE_DATABASE_URL"] = (
        f"postgresql+asyncpg://campaigns:{example['CAMPAIGNS_DB_PASSWORD']}@127.0.0.1:5432/campaigns"
    )
    return {
        **env,
        "CAMPAIGN_ENGINE_STATE_DIR": str(state_dir),
        "CAMPAIGN_ENGINE_API_PORT": str(free_port()),
        "CAMPAIGN_ENGINE_API_METRICS_PORT": "0",
        "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": "0",
    }


async def run(*args: str, env: dict[str, str], within: float = 60) -> tuple[int | None, str]:
    """The CLI with only `env`: its exit code and stderr; a command still running after
    `within` seconds (one that started) is killed and reported as None."""
    process = await asyncio.create_subprocess_exec(
        CLI, *args, env={"PATH": os.environ["PATH"], **env}, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        _, err = await process.communicate()
        return None, err.decode()
    return process.returncode, err.decode()


def sources(settings: Settings) -> list[str]:
    return [refusal.source for refusal in secret_policy.refusals(settings)]


# --- .env.example -------------------------------------------------------------------------------


def test_every_value_of_env_example_is_a_listed_placeholder() -> None:
    example = env_example()
    assert example, "no variables read from .env.example"
    for name, value in example.items():
        assert secret_policy.PLACEHOLDERS.get(value) == name, (name, "not in PLACEHOLDERS")


# Parametrized values are fixed, not random: pytest-xdist's workers must collect the same ids.
def _fixed_hex(seed: str, nbytes: int) -> str:
    """`nbytes` bytes as hex, as random-looking as `secrets.token_hex` but the same every run."""
    return hashlib.sha256(seed.encode()).hexdigest()[: 2 * nbytes]


def _fixed_urlsafe(seed: str, nbytes: int) -> str:
    """`nbytes` bytes as unpadded URL-safe base64, as `secrets.token_urlsafe` gives them."""
    return base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest()[:nbytes]).decode()


@pytest.mark.parametrize(
    "command", [["api"], ["worker"], ["dev"], ["keys", "list"], ["suppressions", "list"]]
)
async def test_env_example_placeholders_stop_every_command_naming_each_setting(
    command: list[str], tmp_path: Path
) -> None:
    env = compose_env(tmp_path / "var")
    example = env_example()

    code, err = await run(*command, env=env)

    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    for setting in (
        "CAMPAIGN_ENGINE_API_KEY_PEPPER",
        "CAMPAIGN_ENGINE_UNSUBSCRIBE_KEY",
        "CAMPAIGN_ENGINE_PAYLOAD_KEYS",
        "CAMPAIGN_ENGINE_DATABASE_URL",
    ):
        [line] = [line for line in lines if setting in line]
        assert "placeholder" in line and ".env.example" in line, line
    assert len(lines) == 4, err
    assert "Traceback" not in err
    for value in example.values():  # named, never echoed
        assert value not in err
    assert not (tmp_path / "var" / "temporal.db").exists(), "dev started Temporal"


async def test_a_token_minted_with_the_public_placeholder_key_unsubscribes_nobody(
    tmp_path: Path,
) -> None:
    """The finding: the API ran with .env.example's key, and a token anyone can mint from it
    unsubscribed an arbitrary lead of any group. Now the API does not start at all."""
    placeholder = env_example()["CAMPAIGN_ENGINE_UNSUBSCRIBE_KEY"]
    token = unsubscribe.mint(
        placeholder.encode(),
        account_group_id="64d0000000000000000000a1",
        campaign_id="64d0000000000000000000c1",
        lead_id=secrets.token_hex(12),
        step_id="intro",
        email="victim@example.com",
    )
    port = free_port()
    env = {
        "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path / "var"),
        "CAMPAIGN_ENGINE_API_PORT": str(port),
        "CAMPAIGN_ENGINE_API_METRICS_PORT": "0",
        "CAMPAIGN_ENGINE_UNSUBSCRIBE_KEY": placeholder,
    }
    process = await asyncio.create_subprocess_exec(
        CLI, "api", env={"PATH": os.environ["PATH"], **env}, stderr=asyncio.subprocess.PIPE
    )
    try:
        try:
            _, err = await asyncio.wait_for(process.communicate(), 30)
        except TimeoutError:
            # Today's failure: it serves. Show what the forged token does, then fail.
            async with httpx.AsyncClient() as http:
                answer = await http.post(f"http://127.0.0.1:{port}/u/{token}")
            pytest.fail(f"the API runs on the placeholder key; POST /u/<forged> → {answer}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 2
    assert "CAMPAIGN_ENGINE_UNSUBSCRIBE_KEY" in err.decode() and placeholder not in err.decode()
    assert not port_in_use("127.0.0.1", port)
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx.ConnectError):
            await http.post(f"http://127.0.0.1:{port}/u/{token}")


async def test_dkim_init_reads_no_secret_and_still_runs(tmp_path: Path) -> None:
    env = {**compose_env(tmp_path / "var")}
    code, err = await run(
        "dkim",
        "init",
        "--selector",
        "s1",
        "--domain",
        "example.com",
        "--key-path",
        str(tmp_path / "dkim.pem"),
        "--bits",
        "1024",
        env=env,
    )
    assert code == 0, err


# --- the rules ----------------------------------------------------------------------------------


def test_what_the_usual_generators_make_always_passes(tmp_path: Path) -> None:
    for _ in range(300):
        for text in (
            secrets.token_hex(32),
            secrets.token_urlsafe(32),
            base64.b64encode(os.urandom(32)).decode(),
        ):
            assert secret_policy.judge_key_text(text) is None, text
        ring = f"{new_key('k2').entry()},{new_key('k1').entry()}"
        assert list(secret_policy.judge_payload_keys(ring)) == []
    settings = Settings(
        state_dir=tmp_path,
        api_key_pepper=SecretStr(secrets.token_urlsafe(32)),
        unsubscribe_key=SecretStr(secrets.token_hex(32)),
        payload_keys=SecretStr(new_key().entry()),
        database_url=SecretUrl(f"postgresql+asyncpg://u:{secrets.token_urlsafe(12)}@db/x"),
        smtp_password=SecretStr("a provider's password"),
    )
    assert secret_policy.refusals(settings) == []


def test_make_devs_own_generated_secrets_pass(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "var")
    load_pepper(settings)
    unsubscribe.load_unsubscribe_key(settings)
    load_key_ring(settings)
    assert sorted(path.name for path in (tmp_path / "var").iterdir()) == [
        "api-key-pepper",
        "payload-keys",
        "unsubscribe-key",
    ]
    assert secret_policy.refusals(settings) == []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("change-me-to-a-long-random-secret", "placeholder"),
        ("CHANGEME-" + _fixed_hex("changeme", 32), "placeholder"),
        ("<your secret here>", "placeholder"),
        ("...", "placeholder"),
        ("an-example-pepper-" + _fixed_hex("pepper", 32), "placeholder"),
        ("secret", "known example"),
        ("password", "known example"),
        (_fixed_hex("128", 16), "32 bytes"),  # 128 bits
        (_fixed_urlsafe("192", 24), "32 bytes"),  # 192 bits
        ("Tr0ub4dor&3", "32 bytes"),
        ("a" * 200, "32 bytes"),
        ("0" * 64, "32 bytes"),
        ("ab" * 64, "32 bytes"),
        ("0123456789abcdef" * 4, "32 bytes"),
        ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", "32 bytes"),
        ("correct horse battery staple correct horse battery staple", "32 bytes"),
        (_fixed_hex("eight", 8) * 8, "32 bytes"),  # one short secret said eight times
    ],
)
@pytest.mark.parametrize("setting", ["api_key_pepper", "unsubscribe_key"])
def test_weak_key_settings_are_refused_naming_them(
    setting: str, value: str, why: str, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path).model_copy(update={setting: SecretStr(value)})
    [refusal] = secret_policy.refusals(settings)
    assert refusal.source == f"CAMPAIGN_ENGINE_{setting.upper()}"
    assert why in refusal.reason, refusal.reason
    if len(value) > 12:  # (shorter ones, such as `secret`, are words the line may use)
        assert value not in refusal.line()


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (bytes(32), "32 bytes"),
        (bytes(range(32)), "32 bytes"),
        (b"change-me-change-me-change-me-!!", "placeholder"),
        (b"a perfectly printable 32 byte pw", "32 bytes"),  # text passing for a key
        (hashlib.sha256(b"twice").digest()[:16] * 2, "32 bytes"),
    ],
)
def test_weak_payload_keys_are_refused_wherever_in_the_ring(
    secret: bytes, why: str, tmp_path: Path
) -> None:
    weak = f"old:{base64.b64encode(secret).decode()}"
    ring = SecretStr(f"{new_key('new').entry()},{weak}")  # decrypt-only, still refused
    [refusal] = secret_policy.refusals(Settings(state_dir=tmp_path, payload_keys=ring))
    assert refusal.source == "CAMPAIGN_ENGINE_PAYLOAD_KEYS"
    assert "'old'" in refusal.reason and why in refusal.reason, refusal.reason


def test_service_passwords_are_refused_as_placeholders_or_examples_only(tmp_path: Path) -> None:
    readme_imap = ImapSettings(
        host="imap.gmail.com",
        username="sales@acme.example",
        password=SecretStr("abcd efgh ijkl mnop"),  # README's Gmail example
    )
    settings = Settings(
        state_dir=tmp_path,
        database_url=SecretUrl("postgresql+asyncpg://user:pass@host:5432/db"),  # README's
        rate_limit_storage_uri=SecretUrl("redis://:change-me@redis:6379/0"),
        smtp_password=SecretStr("password"),
        mailboxes={"sales@acme.example": MailboxLimits(account_groups="*", imap=readme_imap)},
    )
    assert sources(settings) == [
        "CAMPAIGN_ENGINE_DATABASE_URL",
        "CAMPAIGN_ENGINE_RATE_LIMIT_STORAGE_URI",
        "CAMPAIGN_ENGINE_SMTP_PASSWORD",
        "CAMPAIGN_ENGINE_MAILBOXES 'sales@acme.example' imap.password",
    ]
    # A short password a provider issued is theirs to judge: it runs.
    issued = settings.model_copy(
        update={
            "database_url": SecretUrl("postgresql+asyncpg://app:Zq7-kW2p@db/app"),
            "rate_limit_storage_uri": SecretUrl("redis://redis:6379"),
            "smtp_password": SecretStr("xkqzwvbnmtrplsdh"),
            "mailboxes": {},
        }
    )
    assert sources(issued) == []


def test_a_secret_file_written_by_hand_is_judged_like_the_setting(tmp_path: Path) -> None:
    (tmp_path / PEPPER_FILE).write_text("change-me\n")
    (tmp_path / "payload-keys").write_text(f"k1:{base64.b64encode(bytes(32)).decode()}\n")
    assert sources(Settings(state_dir=tmp_path)) == [
        str(tmp_path / PEPPER_FILE),
        str(tmp_path / "payload-keys"),
    ]
    # The setting, when given, is what runs: the file is not read.
    given = Settings(state_dir=tmp_path, api_key_pepper=SecretStr(secrets.token_hex(32)))
    assert sources(given) == [str(tmp_path / "payload-keys")]


def test_a_dkim_key_under_1024_bits_is_refused(tmp_path: Path) -> None:
    """RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits."""
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "512"], check=True, capture_output=True)
    settings = Settings(
        state_dir=tmp_path,
        dkim_selector="s1",
        dkim_domain="example.com",
        dkim_private_key_path=key,
    )
    [refusal] = secret_policy.refusals(settings)
    assert refusal.source == "CAMPAIGN_ENGINE_DKIM_PRIVATE_KEY_PATH"
    assert "512 bits" in refusal.reason


# --- pyjwt ------------------------------------------------------------------------------------


def test_pyjwt_floor_excludes_the_issuer_substring_bug() -> None:
    """CVE-2024-53861: pyjwt 2.10.0 accepted an `iss` that was a substring of the expected one."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [requirement] = [
        Requirement(text)
        for text in project["dependencies"]
        if Requirement(text).name.lower() == "pyjwt"
    ]
    assert not requirement.specifier.contains("2.10.0")
    assert not requirement.specifier.contains("2.9.0")
    assert requirement.specifier.contains("2.10.1")
    assert Version(version("pyjwt")) >= Version("2.10.1")
