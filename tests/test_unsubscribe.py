"""One-click unsubscribe (RFC 8058), suppressions and DKIM (RFC 6376), on the real stack: the
API, a worker, the file outbox or an in-process aiosmtpd server, and Temporal."""

from __future__ import annotations

import asyncio
import email
import os
import re
import sys
from email.message import Message
from pathlib import Path
from typing import Any

import dkim
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from campaign_engine import dkim_keys, unsubscribe
from campaign_engine.ids import new_object_id, workflow_instance_id_for
from campaign_engine.keys import Permission
from campaign_engine.store import Store, Suppression, utcnow
from devsupport.servers import SmtpSink
from tests.helpers import Api, Campaign, create_campaign
from tests.helpers.campaigns import (
    TWO_STEP_CAMPAIGN,
    approve,
    enrol,
    lead,
    outbox_files,
    wait_for_status,
)
from tests.helpers.waiting import assert_eventually
from tests.helpers.workflows import handle_of

SELECTOR = "ce2026"
DOMAIN = "acme.test"
_KEY = dkim_keys.generate(1024)  # small: fast, and dkimpy accepts 1024 bits


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """DKIM on, with a key of this module; SMTP when the test asks for the sink."""
    key_path = tmp_path / "dkim.pem"
    key_path.write_bytes(_KEY.private_pem)
    overrides: dict[str, Any] = {
        "dkim_selector": SELECTOR,
        "dkim_domain": DOMAIN,
        "dkim_private_key_path": key_path,
        "sender": f"Sales <sales@{DOMAIN}>",
        "unsubscribe_mailbox": f"unsubscribe@{DOMAIN}",
    }
    if "smtp" in request.fixturenames:
        sink: SmtpSink = request.getfixturevalue("smtp")
        overrides |= {"delivery": "smtp", "smtp_port": sink.port}
    return overrides


def _dns(name: bytes, timeout: int = 5) -> bytes:
    """A stub resolver serving the public key at `<selector>._domainkey.<domain>`."""
    assert name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode(), name
    return _KEY.public_txt.encode()


def _token_of(message: Message) -> str:
    header = str(message["List-Unsubscribe"])
    found = re.search(r"/u/([A-Za-z0-9_-]+)>", header)
    assert found, header
    return found.group(1)


async def _delivered(api: Api, campaign: Campaign, enrolled: dict[str, str]) -> str:
    """Enrols the lead, approves its first step; returns its instance id once delivered."""
    instance_id = await enrol(api, campaign, enrolled)
    await wait_for_status(api, campaign, instance_id, within=15.0, hasPendingApproval=True)
    assert (await approve(api, campaign, instance_id)).status_code == 200
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )
    return instance_id


async def _campaign_in(api: Api, campaign: Campaign) -> Campaign:
    """Another campaign in the same account group, with the same key."""
    other = Campaign(campaign.account_group_id, new_object_id(), campaign.key)
    response = await api.http.put(other.url, json=TWO_STEP_CAMPAIGN, headers=other.auth)
    assert response.status_code == 201, response.text
    return other


async def test_delivered_message_carries_signed_one_click_unsubscribe(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker
) -> None:
    await _delivered(api, campaign, lead())

    [envelope] = smtp.envelopes
    data = envelope.content
    message = email.message_from_bytes(data)
    token = _token_of(message)
    url = f"{api.settings.resolved_unsubscribe_base_url}/u/{token}"

    # Folded after the comma (RFC 5322 §2.2.3); unfolded it is the two URIs.
    assert " ".join(str(message["List-Unsubscribe"]).split()) == (
        f"<{url}>, <mailto:unsubscribe@{DOMAIN}?subject=unsubscribe%20{token}>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == (f"<{campaign.campaign_id}.{campaign.account_group_id}.{DOMAIN}>")
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert f"To stop receiving these messages: {url}".encode() in body
    signature = str(message["DKIM-Signature"])
    signed = {h.strip().lower() for h in re.search(r"h=([^;]+)", signature).group(1).split(":")}  # type: ignore[union-attr]
    assert {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    } <= signed
    assert f"d={DOMAIN}" in signature and f"s={SELECTOR}" in signature
    assert dkim.verify(data, dnsfunc=_dns)
    tampered = data.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks",
    )
    assert tampered != data
    assert not dkim.verify(tampered, dnsfunc=_dns)


async def test_unsubscribe_loop_closes_without_any_other_system(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    grace = lead(email="Grace.Hopper@Example.com", firstName="Grace")
    first = await _delivered(api, campaign, grace)
    other = await _campaign_in(api, campaign)
    waiting = await enrol(api, other, grace)
    await wait_for_status(api, other, waiting, within=15.0, hasPendingApproval=True)
    [file] = outbox_files(api.settings)
    message = email.message_from_bytes(file.read_bytes())
    assert dkim.verify(file.read_bytes(), dnsfunc=_dns)  # the outbox gets the signed bytes too
    token = _token_of(message)

    # A link scanner's GET changes nothing.
    page = await api.http.get(f"/u/{token}")
    assert page.status_code == 200
    assert f'action="/u/{token}"' in page.text and 'method="post"' in page.text
    await asyncio.sleep(0.5)
    assert await api.store.list_suppressions(campaign.account_group_id) == []
    await wait_for_status(api, other, waiting, hasPendingApproval=True, workflowStatus="pending")

    # The provider's one-click POST, form-encoded (RFC 8058 §3.2).
    one_click = await api.http.post(
        f"/u/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200, one_click.text

    for stopped_campaign, instance_id in ((other, waiting), (campaign, first)):
        await wait_for_status(
            api,
            stopped_campaign,
            instance_id,
            workflowStatus="stopped",
            workflowStopReason="LEAD_UNSUBSCRIBED",
        )
    status = await handle_of(temporal, other, waiting).query("lead_status")
    assert status["stop"]["decided_by"] == "lead (one-click unsubscribe)"
    assert "one-click unsubscribe at" in status["stop"]["note"]
    [row] = await api.store.list_suppressions(campaign.account_group_id)
    assert row.lead_id == grace["id"] and row.source == "one-click"

    # Again: 200, nothing changes.
    again = await api.http.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click")
    assert again.status_code == 200
    [same] = await api.store.list_suppressions(campaign.account_group_id)
    assert (same.created_at, same.decided_by, same.note) == (
        row.created_at,
        row.decided_by,
        row.note,
    )

    # Enrolment: refused in every campaign of the group, under the same address with another
    # id too; allowed in another account group.
    third = await _campaign_in(api, campaign)
    for target, enrolled in (
        (campaign, grace),
        (other, grace),
        (third, grace),
        (third, {**grace, "id": new_object_id(), "email": "grace.hopper@example.com"}),
    ):
        refused = await api.http.post(
            f"{target.url}/workflow-instances", json={"lead": enrolled}, headers=target.auth
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "LEAD_SUPPRESSED"
        assert "unsubscribed" in refused.json()["error"]["message"]
    elsewhere = await create_campaign(api)
    await enrol(api, elsewhere, grace)

    # The store holds no address in clear (its files, byte for byte), only a keyed hash.
    files = [p for p in api.settings.state_dir.glob("campaign-engine.db*") if p.is_file()]
    assert files
    for path in files:
        content = path.read_bytes().lower()
        for form in ("grace.hopper@example.com", "grace.hopper", "Grace.Hopper"):
            assert form.lower().encode() not in content, path
            assert form.encode("utf-16-le") not in content, path
    assert row.email_hash is not None and re.fullmatch(r"[0-9a-f]{32}", row.email_hash)


async def test_lead_suppressed_while_its_message_waits_at_the_gate_is_never_mailed(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    ada = lead()
    instance_id = await enrol(api, campaign, ada)
    await wait_for_status(api, campaign, instance_id, within=15.0, hasPendingApproval=True)
    # Written straight into the store, as when the signal cannot reach the instance (Temporal's
    # visibility lags, or is down): the delivery activity's own check must hold.
    await api.store.add_suppression(
        Suppression(
            account_group_id=campaign.account_group_id,
            lead_id=ada["id"],
            email_hash=None,
            source="api",
            decided_by="test",
            note="",
            created_at=utcnow(),
        )
    )

    approved = await approve(api, campaign, instance_id)

    assert approved.status_code == 200, approved.text
    await wait_for_status(
        api,
        campaign,
        instance_id,
        workflowStatus="stopped",
        workflowStopReason="LEAD_UNSUBSCRIBED",
    )
    assert outbox_files(api.settings) == []


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x",
        "AAAA",
        "forged" * 20,
        "_" * 300,
    ],
)
async def test_forged_or_truncated_tokens_are_404_with_no_hint(
    api: Api, campaign: Campaign, token: str
) -> None:
    key = unsubscribe.load_unsubscribe_key(api.settings)
    real = unsubscribe.mint(
        key,
        account_group_id=campaign.account_group_id,
        campaign_id=campaign.campaign_id,
        lead_id=new_object_id(),
        step_id="intro",
        email="ada@example.com",
    )
    unknown = (await api.http.get("/no/such/route")).json()["error"]
    flipped = real[:-2] + ("A" if real[-2] != "A" else "B") + real[-1]
    for candidate in (token, real[:-1], real[:-4], flipped, real + "A"):
        if not candidate:
            continue
        for method in ("GET", "POST"):
            response = await api.http.request(method, f"/u/{candidate}")
            assert response.status_code == 404, (method, candidate)
            assert response.json()["error"] == unknown
    assert (await api.http.get(f"/u/{real}")).status_code == 200
    assert await api.store.list_suppressions() == []


async def test_rest_suppression_stops_open_instances_and_is_idempotent(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    ada = lead()
    instance_id = await enrol(api, campaign, ada)
    await wait_for_status(api, campaign, instance_id, within=15.0, hasPendingApproval=True)
    url = f"/v1/accounts/{campaign.account_group_id}/suppressions"
    body = {"leadId": ada["id"], "email": ada["email"], "note": "asked by phone"}
    reader = await api.issue_key([campaign.account_group_id], [Permission.CAMPAIGNS_READ])

    forbidden = await api.http.post(
        url, json=body, headers={"Authorization": f"Bearer {reader.key}"}
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "MISSING_PERMISSION"

    async def signalled() -> int:
        # Visibility is eventually consistent: the instance may take a moment to be listed.
        response = await api.http.post(url, json=body, headers=campaign.auth)
        assert response.status_code in (200, 201), response.text
        count: int = response.json()["data"]["openInstancesSignalled"]
        return count

    created = await api.http.post(url, json=body, headers=campaign.auth)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["leadId"] == ada["id"] and data["hasEmail"] is True
    assert data["decidedBy"] == campaign.key.id
    if data["openInstancesSignalled"] == 0:
        await assert_eventually(signalled, lambda count: count == 1, within=10.0)
    await wait_for_status(
        api,
        campaign,
        instance_id,
        workflowStatus="stopped",
        workflowStopReason="LEAD_UNSUBSCRIBED",
    )
    again = await api.http.post(url, json=body, headers=campaign.auth)
    assert again.status_code == 200
    assert again.json()["data"]["createdAt"] == data["createdAt"]


async def test_suppressions_in_the_store(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        group, lead_id = new_object_id(), new_object_id()
        row = Suppression(
            account_group_id=group,
            lead_id=lead_id,
            email_hash="ab" * 16,
            source="api",
            decided_by="test",
            note="",
            created_at=utcnow(),
        )
        assert (await store.add_suppression(row))[1] is True
        assert (await store.add_suppression(row))[1] is False
        assert await store.suppression_source(group, lead_id, None) == "api"
        assert await store.suppression_source(group, new_object_id(), "ab" * 16) == "api"
        assert await store.suppression_source(new_object_id(), lead_id, "ab" * 16) is None
        assert await store.lift_suppression(group, lead_id)
        assert not await store.lift_suppression(group, lead_id)
        assert await store.suppression_source(group, lead_id, "ab" * 16) is None
    finally:
        await store.close()


def test_tokens_name_their_message_and_resist_tampering() -> None:
    key = b"k" * 32
    ids = {name: new_object_id() for name in ("account_group_id", "campaign_id", "lead_id")}
    token = unsubscribe.mint(key, step_id="follow-up", email="Ada@Example.com", **ids)

    verified = unsubscribe.verify(key, token)

    assert verified is not None
    assert verified.lead_id == ids["lead_id"] and verified.step_id == "follow-up"
    assert verified.email_hash == unsubscribe.email_hash(key, "ada@example.com")
    instance = workflow_instance_id_for(ids["account_group_id"], ids["campaign_id"], ids["lead_id"])
    assert instance in verified.message_id.replace(".", ":")
    assert unsubscribe.verify(b"another key", token) is None
    assert len(token) <= unsubscribe.MAX_TOKEN_CHARS
    long_step = unsubscribe.mint(key, step_id="s" * 64, email="a@example.com", **ids)
    assert len(long_step) == unsubscribe.MAX_TOKEN_CHARS


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("campaign-engine")),
        *args,
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_lists_and_lifts_suppressions_and_makes_dkim_keys(
    api: Api, campaign: Campaign, tmp_path: Path
) -> None:
    lead_id = new_object_id()
    await api.store.add_suppression(
        Suppression(
            account_group_id=campaign.account_group_id,
            lead_id=lead_id,
            email_hash="cd" * 16,
            source="api",
            decided_by="crm",
            note="by phone",
            created_at=utcnow(),
        )
    )
    env = {"CAMPAIGN_ENGINE_STATE_DIR": str(api.settings.state_dir)}

    code, out, _ = await _cli("suppressions", "list", env=env)
    assert code == 0 and lead_id in out and '"hasEmail": true' in out and "cd" * 16 not in out
    code, out, _ = await _cli(
        "suppressions",
        "lift",
        "--account-group",
        campaign.account_group_id,
        "--lead",
        lead_id,
        env=env,
    )
    assert code == 0
    assert await api.store.list_suppressions(campaign.account_group_id) == []
    code, _, err = await _cli(
        "suppressions",
        "lift",
        "--account-group",
        campaign.account_group_id,
        "--lead",
        lead_id,
        env=env,
    )
    assert code == 1 and "not suppressed" in err

    key_path = tmp_path / "dkim" / "key.pem"
    code, out, _ = await _cli(
        "dkim",
        "init",
        "--selector",
        "s1",
        "--domain",
        "acme.test",
        "--key-path",
        str(key_path),
        "--bits",
        "1024",
        env=env,
    )
    assert code == 0, out
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert "s1._domainkey.acme.test. IN TXT" in out
    txt = dkim_keys.public_txt_of(key_path.read_bytes())
    assert "".join(re.findall(r'"([^"]*)"', out)) == txt
    message = b"From: a@acme.test\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    signed = dkim.sign(message, b"s1", b"acme.test", key_path.read_bytes()) + message
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: txt.encode())
    code, _, err = await _cli(
        "dkim",
        "init",
        "--selector",
        "s1",
        "--domain",
        "acme.test",
        "--key-path",
        str(key_path),
        env=env,
    )
    assert code == 1 and "not overwritten" in err
