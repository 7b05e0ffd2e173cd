"""One-click unsubscribe (RFC 8058, RFC 2369): the public `GET` and `POST /u/{token}`.

The token in the URL is the credential (`campaign_engine.unsubscribe`): no API key. A mail
provider's one-click `POST` (body `List-Unsubscribe=One-Click`, form-encoded, RFC 8058 §3.2) or
the button on the `GET` page records the suppression and stops the lead's open instances; it is
idempotent and answers `200` with a short page. `GET` only shows that page with the button: link
scanners and prefetchers fetch URLs in mail, so a GET never unsubscribes anyone (RFC 8058 §3.2
says the same). A token that does not verify (forged, truncated, altered) is the same `404` as
an unknown route: nothing tells a guesser how close it came.

These routes are not in the OpenAPI document: mail clients call them, not API clients. They
read no JSON, so they do not use `JsonBodyRoute` (which would answer the form with 415).
"""

from __future__ import annotations

import hashlib
import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.deps import InstancesDep, StoreDep, UnsubscribeKeyDep
from api.errors import NotFound
from api.suppressions import suppress
from campaign_engine import unsubscribe
from campaign_engine.ids import workflow_instance_id_for
from campaign_engine.inbound_messages import InboundMessageRow, InboundMessages
from campaign_engine.store import Store, utcnow
from inbound.classification import Kind
from inbound.matching import MatchedBy
from inbound.pipeline import Source

router = APIRouter(include_in_schema=False)

ONE_CLICK_SOURCE = "one-click"
DECIDED_BY = "lead (one-click unsubscribe)"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem">
<h1 style="font-size: 1.4rem">{title}</h1>
{content}
</body></html>
"""


def _page(title: str, content: str) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), content=content),
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _verified(key: bytes, token: str) -> unsubscribe.UnsubscribeToken:
    verified = unsubscribe.verify(key, token)
    if verified is None:
        raise NotFound()
    return verified


@router.get("/u/{token}", response_class=HTMLResponse)
async def unsubscribe_page(token: str, key: UnsubscribeKeyDep) -> HTMLResponse:
    """A page with one button that POSTs the one-click form; changes nothing itself.
    404 (the envelope of an unknown route) for a token that does not verify."""
    _verified(key, token)
    action = html.escape(f"/u/{token}", quote=True)
    return _page(
        "Unsubscribe",
        "<p>Stop receiving these messages?</p>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe_one_click(
    token: str, key: UnsubscribeKeyDep, store: StoreDep, instances: InstancesDep
) -> HTMLResponse:
    """RFC 8058 one-click: records the suppression (first one wins), signals the lead's open
    instances in the account group, answers 200. The body (`List-Unsubscribe=One-Click`, form
    or multipart) is not read: the token alone decides. 404 for a token that does not verify;
    502 `STORE_UNAVAILABLE` when the suppression could not be recorded (a provider retries)."""
    verified = _verified(key, token)
    await suppress(
        store,
        instances,
        account_group_id=verified.account_group_id,
        lead_id=verified.lead_id,
        email_hash=verified.email_hash,
        source=ONE_CLICK_SOURCE,
        decided_by=DECIDED_BY,
        note=f"from {verified.message_id}",
    )
    await record_one_click(store, verified)
    return _page("Unsubscribed", "<p>You will not receive these messages any more.</p>")


async def record_one_click(store: Store, verified: unsubscribe.UnsubscribeToken) -> None:
    """Logs the unsubscribe as an inbound event of its campaign and step (once per message:
    a second click finds the first row), so campaign stats count it."""
    now = utcnow()
    await InboundMessages(store).add(
        InboundMessageRow(
            scope=f"account-group:{verified.account_group_id}",
            inbound_message_id=hashlib.sha256(
                f"one-click\x00{verified.message_id}".encode()
            ).hexdigest()[:32],
            source=Source.ONE_CLICK.value,
            classification=Kind.UNSUBSCRIBE.value,
            evidence={"rule": "one_click", "source": "RFC 8058"},
            action="unsubscribed",
            account_group_id=verified.account_group_id,
            campaign_id=verified.campaign_id,
            workflow_instance_id=workflow_instance_id_for(
                verified.account_group_id, verified.campaign_id, verified.lead_id
            ),
            lead_id=verified.lead_id,
            step_id=verified.step_id,
            matched_by=MatchedBy.UNSUBSCRIBE_TOKEN.value,
            email_hash=verified.email_hash,
            received_at=now,
            created_at=now,
        )
    )
