"""A template that names something a lead does not have is told the names there are and the
likely one (`activities.sandbox.unknown_name_message`): at PUT (a 400 naming the template's
field) and at draft time (the instance's `failure`), in the same words."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.worker import Worker

from activities import templates
from activities.sandbox import TemplateRenderError
from campaign_engine.spelling import likely_names
from tests.helpers import Api, Campaign, create_campaign, enrol, instance_data, lead
from tests.helpers.waiting import assert_eventually

LEAD_FIELDS = "`id`, `email`, `firstName`, `lastName` and `company`"

# (template, the name it should suggest; None: no guess, the names there are only)
UNKNOWN_NAMES = [
    # the issue's own: snake case for the API's camelCase
    ("{{ lead.first_name }}", "lead.firstName"),
    ("{{ lead.last_name }}", "lead.lastName"),
    # another case, other separators
    ("{{ lead.FirstName }}", "lead.firstName"),
    ("{{ lead.firstname }}", "lead.firstName"),
    ("{{ lead.LAST_NAME }}", "lead.lastName"),
    ("{{ lead.e_mail }}", "lead.email"),
    ("{{ lead['first-name'] }}", "lead.firstName"),
    # a longer or shorter name for a field
    ("{{ lead.email_address }}", "lead.email"),
    ("{{ lead.emailAddress }}", "lead.email"),
    ("{{ lead.mail }}", "lead.email"),
    ("{{ lead.company_name }}", "lead.company"),
    ("{{ lead.lead_id }}", "lead.id"),
    ("{{ lead.first }}", "lead.firstName"),
    # typos
    ("{{ lead.frstName }}", "lead.firstName"),
    ("{{ lead.firstNmae }}", "lead.firstName"),
    ("{{ lead.compnay }}", "lead.company"),
    ("{{ lead.emial }}", "lead.email"),
    # the field without `lead.`
    ("{{ first_name }}", "lead.firstName"),
    ("{{ firstName }}", "lead.firstName"),
    ("{{ company }}", "lead.company"),
    ("{{ email }}", "lead.email"),
    ("{{ lead_first_name }}", "lead.firstName"),
    # the variables themselves misspelt
    ("{{ leads.firstName }}", "lead"),
    ("{{ Lead.firstName }}", "lead"),
    ("{{ unsubscribe_link }}", "unsubscribe_url"),
    ("{{ unsubscribeUrl }}", "unsubscribe_url"),
    # where the name is used, not only printed
    ("{% if lead.first_name %}x{% endif %}", "lead.firstName"),
    ("{{ lead.first_name | upper }}", "lead.firstName"),
    ("{% for part in lead.first_name %}{{ part }}{% endfor %}", "lead.firstName"),
    ("Hi {{ lead.first_name ~ '!' }}", "lead.firstName"),
    # nothing close: the names there are, and no guess
    ("{{ lead.phone }}", None),
    ("{{ lead.tags }}", None),
    ("{{ contact.firstName }}", None),
    ("{{ foo }}", None),
]


def _refusal(template: str) -> str:
    with pytest.raises(TemplateRenderError) as refused:
        templates.render(template, templates.WORST_CASE_LEAD, limit=templates.MAX_BODY_CHARS)
    return str(refused.value)


@pytest.mark.parametrize(("template", "meant"), UNKNOWN_NAMES)
def test_an_unknown_name_is_told_the_likely_one_and_those_there_are(
    template: str, meant: str | None
) -> None:
    message = _refusal(template)
    assert "has no attribute" not in message  # Jinja's own words, which name no fix
    if meant is None:
        assert "did you mean" not in message
    else:
        assert f"did you mean `{meant}`" in message
    assert LEAD_FIELDS in message
    if any(f" lead{after}" in template for after in ".["):
        assert "unknown field `lead." in message
    else:
        assert "unknown variable" in message
        assert "`unsubscribe_url`" in message


@pytest.mark.parametrize(
    ("template", "meant"),
    [
        ("{{ lead.firstName | upperr }}", "`upper`"),
        ("{{ lead.firstName | captialize }}", "`capitalize`"),
        ("{{ lead.firstName | trim | lowr }}", "`lower`"),
        ("{% if lead.company is defind %}x{% endif %}", "`defined`"),
        ("{% iff lead.company %}x{% endif %}", "`if`"),
        ("{% fro part in lead %}{% endfor %}", "`for`"),
        ("{{ lead.firstName | zzzz }}", None),
        ("{% for i in rnage(3) %}{{ i }}{% endfor %}", "`range`"),
    ],
)
def test_an_unknown_filter_test_or_tag_is_told_the_likely_one(
    template: str, meant: str | None
) -> None:
    message = _refusal(template)
    if meant is None:
        assert "did you mean" not in message
    else:
        assert f"did you mean {meant}?" in message


def test_the_issue_example_names_first_name() -> None:
    message = _refusal("Hi {{ lead.first_name }}")
    assert message == (
        "unknown field `lead.first_name`: did you mean `lead.firstName`? The fields of `lead` "
        f"are {LEAD_FIELDS}."
    )


def test_an_ambiguous_name_offers_each_likely_field() -> None:
    message = _refusal("{{ lead.name }}")
    assert "did you mean `lead.firstName` or `lead.lastName`?" in message


def test_a_field_of_a_text_value_says_what_the_value_is() -> None:
    message = _refusal("{{ lead.firstName.value }}")
    assert message.startswith("`lead.firstName` is text: it has no field `value`")


def test_an_unsafe_attribute_keeps_the_sandbox_s_words() -> None:
    assert "unsafe" in _refusal("{{ lead.__class__ }}")


def test_a_default_still_covers_an_unknown_name() -> None:
    rendered = templates.render(
        "{{ lead.first_name | default('there') }}", templates.WORST_CASE_LEAD, limit=100
    )
    assert rendered == "there"


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        ("given_name", ["givenName", "familyName"], ["x.givenName"]),
        ("familyname", ["givenName", "familyName"], ["x.familyName"]),
        ("qqq", ["givenName", "familyName"], []),
        ("", ["givenName"], []),
    ],
)
def test_likely_names_is_not_about_leads_only(
    name: str, candidates: list[str], expected: list[str]
) -> None:
    assert likely_names(name, [(f"x.{c}", c, "x") for c in candidates]) == expected


# --- at PUT and at draft time, through the real API and worker ----------------------------------


def _one_step(subject: str, body: str) -> dict[str, Any]:
    return {
        "name": "Names",
        "steps": [{"id": "intro", "subject": subject, "body": body, "requiresApproval": True}],
    }


@pytest.mark.parametrize(
    ("subject", "body", "field", "meant"),
    [
        ("Hi {{ lead.first_name }}", "Hello", "steps.0.subject", "lead.firstName"),
        ("Hi", "Hello {{ lead.email_address }}", "steps.0.body", "lead.email"),
        ("Hi", "Hello {{ first_name }}", "steps.0.body", "lead.firstName"),
        ("Hi", "Hello {{ lead.frstName }}", "steps.0.body", "lead.firstName"),
    ],
)
async def test_a_put_naming_an_unknown_field_is_a_400_with_the_likely_one(
    api: Api, subject: str, body: str, field: str, meant: str
) -> None:
    campaign = await create_campaign(api, _one_step("Hi", "Hello"))

    response = await api.http.put(
        campaign.url, json=_one_step(subject, body), headers=campaign.auth
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"] == field
    assert error["message"].startswith(f"{field}: template does not render: unknown ")
    assert f"did you mean `{meant}`?" in error["message"]
    assert LEAD_FIELDS in error["message"]


async def test_at_draft_time_the_instance_says_the_same(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    """A name used only for some leads passes the PUT's check (its lead has every field) and
    fails the draft of a lead without a company: the instance's `failure` says what to write."""
    body = "Hi{% if not lead.company %} {{ lead.first_name }}{% endif %}"
    response = await api.http.put(
        campaign.url, json=_one_step("Hello", body), headers=campaign.auth
    )
    assert response.status_code == 200, response.text
    instance_id = await enrol(api, campaign, lead(company=""))

    async def failed() -> dict[str, Any]:
        data = await instance_data(api, campaign, instance_id)
        return data if data["leadStatus"]["workflowStatus"] == "failed" else {}

    data = await assert_eventually(failed)

    assert data["leadStatus"]["workflowStopReason"] == "DRAFT_FAILED"
    failure = data["failure"]
    assert failure["stepId"] == "intro"
    assert failure["message"] == (
        "step intro: unknown field `lead.first_name`: did you mean `lead.firstName`? The fields "
        f"of `lead` are {LEAD_FIELDS}."
    )


# --- the same kind in a request body: a field the schema does not have -------------------------


@pytest.mark.parametrize(
    ("body", "field", "meant", "listed"),
    [
        (
            {"name": "N", "steps": [{"id": "a", "subject": "s", "body": "b", "delays": "PT1M"}]},
            "steps.0.delays",
            "delay",
            "The fields of steps.0 are `id`, `channel`, `thread`, `subject`, `body`",
        ),
        (
            {"name": "N", "steps": [{"id": "a", "subject": "s", "body": "b"}], "timeout": "P1D"},
            "timeout",
            "approvalTimeout",
            "The fields of the body are `name`, `steps`, `approvalTimeout`",
        ),
        (
            {
                "name": "N",
                "steps": [{"id": "a", "subject": "s", "body": "b", "requireApproval": False}],
            },
            "steps.0.requireApproval",
            "requiresApproval",
            "`requiresApproval`",
        ),
        (
            {
                "name": "N",
                "steps": [{"id": "a", "subject": "s", "body": "b"}],
                "sendWindow": {"days": ["mon"], "start": "09:00", "end": "17:00", "tz": "UTC"},
            },
            "sendWindow.tz",
            None,
            "The fields of sendWindow are `timeZone`, `days`, `start`, `end`, `holidays`",
        ),
    ],
)
async def test_an_unknown_body_field_is_told_the_likely_one(
    api: Api, body: dict[str, Any], field: str, meant: str | None, listed: str
) -> None:
    campaign = await create_campaign(api, _one_step("Hi", "Hello"))

    response = await api.http.put(campaign.url, json=body, headers=campaign.auth)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["details"] == field
    assert error["message"].startswith(f"{field}: unknown field `{field.rsplit('.', 1)[-1]}`")
    if meant is None:
        assert "did you mean" not in error["message"]
    else:
        assert f"did you mean `{meant}`?" in error["message"]
    assert listed in error["message"]


async def test_an_unknown_lead_field_is_told_the_likely_one(api: Api, campaign: Campaign) -> None:
    enrolled = {**lead(), "first": "Ada"}
    response = await api.http.post(
        f"{campaign.url}/workflow-instances", json={"lead": enrolled}, headers=campaign.auth
    )
    assert response.status_code == 400, response.text
    assert "did you mean `firstName`?" in response.json()["error"]["message"]
    batch = await api.http.post(
        f"{campaign.url}/workflow-instances/batch",
        json={"leads": [{**lead(), "company_name": "Engines"}]},
        headers=campaign.auth,
    )
    assert batch.status_code == 200, batch.text
    [row] = batch.json()["data"]["results"]
    assert row["outcome"] == "invalid"
    assert row["field"] == "company_name"
    assert row["reason"].startswith("unknown field `company_name`: did you mean `company`?")


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("{ag}-workflow", None),
        (
            "campaign:{ag}:{c}:{i}",
            "is the Temporal workflow id: the workflow instance id is its last part, {i}",
        ),
        ("{I}", "did you mean {i}?"),
        ("%20{i}%20", "did you mean {i}?"),
    ],
)
async def test_an_instance_id_of_the_wrong_form_says_what_it_probably_is(
    api: Api, campaign: Campaign, given: str, hint: str | None
) -> None:
    instance = "0123456789abcdef01234567"
    ids = {
        "ag": campaign.account_group_id,
        "c": campaign.campaign_id,
        "i": instance,
        "I": instance.upper(),
    }
    response = await api.http.get(campaign.instance_url(given.format(**ids)), headers=campaign.auth)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["details"] == "workflowInstanceId"
    assert "must be a 24-character lowercase hexadecimal id" in error["message"]
    if hint is None:
        assert "did you mean" not in error["message"]
    else:
        assert hint.format(**ids) in error["message"]
