"""The workflow's one state alone: its transitions, what it carries over continue-as-new, and
properties over arbitrary sequences of signals (no Temporal here: the functions are pure)."""

from __future__ import annotations

import ast
import copy
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import temporalio.converter
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows import state
from workflows.types import (
    CLOSED_PHASES,
    ApprovalRefusal,
    ApproveRequest,
    CampaignInput,
    CampaignSnapshot,
    CampaignState,
    CampaignStep,
    CarriedState,
    Decision,
    Deferral,
    DeliveryOutcome,
    DeliveryReceipt,
    DraftedContent,
    FailureRecord,
    Gate,
    InboundEvent,
    InboundKind,
    Lead,
    PendingApprovalNotice,
    Phase,
    ResumeAt,
    ResumePoint,
    StopReason,
)

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
CONTENT = DraftedContent("intro", "Hi Ada", "Hello")
STEPS = [
    CampaignStep("intro", "Hi", "Hello", delay_seconds=60),
    CampaignStep("next", "Re", "Again"),
]


def _input(state_: CampaignState | None = None) -> CampaignInput:
    return CampaignInput(
        account_group_id="a" * 24,
        campaign_id="c" * 24,
        workflow_instance_id="i" * 24,
        lead=Lead(id="l" * 24, email="ada@example.com"),
        campaign=CampaignSnapshot(name="Test", steps=STEPS, webhook_url="https://hooks.test/x"),
        state=state_,
    )


def at_gate(gate_id: str = "g1") -> CampaignState:
    """A state whose first step waits at gate `gate_id`."""
    s = CampaignState()
    state.begin_step(s, "intro")
    state.drafted(s, CONTENT)
    state.open_gate(s, Gate(gate_id, T0, T0 + timedelta(days=1)))
    return s


def _round_trip(s: CampaignState) -> CampaignState:
    """What the next run starts with: the carried input through Temporal's JSON converter (as
    the server would hand it back), then `restore`."""
    converter = temporalio.converter.default().payload_converter
    [payload] = converter.to_payloads([state.carry(s, _input())])
    [decoded] = converter.from_payloads([payload], [CampaignInput])
    assert isinstance(decoded, CampaignInput)
    return state.restore(decoded, T0)


# --- the two reproductions of issue 23, at the level of the state ---------------------------------


def test_a_stop_before_continuing_as_new_is_carried() -> None:
    s = at_gate()
    state.request_stop(s, StopReason.STOPPED_BY_OPERATOR, "ops", "wrong lead", T0)

    carried = _round_trip(s)

    assert carried.stop is not None
    assert (carried.stop.reason, carried.stop.note) == (
        StopReason.STOPPED_BY_OPERATOR,
        "wrong lead",
    )


def test_an_approval_before_continuing_as_new_is_not_undone() -> None:
    s = at_gate()
    assert state.approve(s, ApproveRequest("r1", "key-1"), T0) is None

    carried = _round_trip(s)

    # The next run delivers the approved content: it does not reopen the gate.
    assert (carried.at, carried.phase, carried.gate) == (ResumeAt.DELIVERY, Phase.DELIVERING, None)
    assert carried.content == CONTENT
    assert [d.decision for d in carried.gate_decisions] == [Decision.APPROVED]
    assert state.approve(carried, ApproveRequest("r2"), T0) == ApprovalRefusal.ALREADY_APPROVED
    record = state.outcome_of(carried, "r1")
    assert record is not None and (record.applied, record.gate_id) == (True, "g1")


# --- transitions ------------------------------------------------------------------------------


def test_approve_closes_the_gate_once() -> None:
    s = at_gate()
    assert state.approve(s, ApproveRequest("r1", "key-1"), T0) is None
    assert state.approve(s, ApproveRequest("r2", "key-2"), T0) == ApprovalRefusal.ALREADY_APPROVED
    assert [d.decided_by for d in s.gate_decisions] == ["key-1"]
    assert s.gate is None and s.phase == Phase.DELIVERING


def test_conditional_approval_names_the_gate() -> None:
    s = at_gate("g1")
    assert state.approve(s, ApproveRequest("r1", if_match=["g0"]), T0) == (
        ApprovalRefusal.GATE_CHANGED
    )
    assert state.approve(s, ApproveRequest("r2", if_match=[]), T0) == ApprovalRefusal.GATE_CHANGED
    assert s.phase == Phase.AWAITING_APPROVAL
    assert state.approve(s, ApproveRequest("r3", if_match=["g0", "g1"]), T0) is None


def test_approve_with_no_gate_and_after_a_stop() -> None:
    s = CampaignState()
    state.begin_step(s, "intro")
    assert state.approve(s, ApproveRequest("r1"), T0) == ApprovalRefusal.NO_GATE_OPEN
    assert state.approve(s, ApproveRequest("r2", if_match=["*"]), T0) == (
        ApprovalRefusal.NO_GATE_OPEN
    )
    s = at_gate()
    state.request_stop(s, StopReason.LEAD_REPLIED, "crm", "", T0)
    assert state.approve(s, ApproveRequest("r3"), T0) == ApprovalRefusal.WORKFLOW_CLOSED


def test_the_first_stop_wins_and_a_closed_instance_takes_none() -> None:
    s = at_gate()
    state.request_stop(s, StopReason.LEAD_REPLIED, "crm", "first", T0)
    state.request_stop(s, StopReason.STOPPED_BY_OPERATOR, "ops", "second", T0)
    assert s.stop is not None and s.stop.note == "first"

    done = CampaignState()
    state.end(done, Phase.COMPLETED, None)
    state.request_stop(done, StopReason.STOPPED_BY_OPERATOR, "ops", "late", T0)
    assert done.stop is None


def test_a_discard_is_recorded_as_the_gates_decision() -> None:
    s = at_gate("g7")
    state.request_stop(s, StopReason.CONTENT_DISCARDED, "ops", "off-brand", T0)
    assert state.end_if_stop_requested(s)
    [decision] = s.gate_decisions
    assert (decision.decision, decision.gate_id, decision.decided_by) == (
        Decision.DISCARDED,
        "g7",
        "ops",
    )
    assert (s.phase, s.stop_reason, s.gate) == (Phase.STOPPED, StopReason.CONTENT_DISCARDED, None)


def test_an_expired_gate_resolves_as_expired() -> None:
    s = at_gate("g1")
    state.request_stop(s, StopReason.APPROVAL_EXPIRED, "system", "no approval in time", T0)
    assert state.resolve_gate(s, "g1") == ("expired", "system", T0)
    assert s.gate_decisions[-1].decision == Decision.EXPIRED


def test_deferrals_count_and_delivery_moves_to_the_delay() -> None:
    s = at_gate()
    state.approve(s, ApproveRequest("r1"), T0)
    receipt = DeliveryReceipt("m1", DeliveryOutcome.DEFERRED, send_at=T0, deferred_because=None)
    assert state.defer(s, "intro", receipt).deferred_because == Deferral.OUTSIDE_WINDOW
    assert state.defer(s, "intro", receipt).deferrals == 2
    assert (s.phase, s.at) == (Phase.SCHEDULED, ResumeAt.DELIVERY)
    state.record_delivery(s, "intro", DeliveryReceipt("m1"), T0)
    assert (s.scheduled, s.at) == (None, ResumeAt.DELAY)
    state.start_delay(s, T0 + timedelta(minutes=1))
    state.end_delay(s)
    state.advance(s)
    assert (s.step_index, s.at, s.content) == (1, ResumeAt.START, None)


def test_outcomes_and_problems_are_bounded() -> None:
    s = at_gate()
    for n in range(state.APPROVAL_OUTCOMES_KEPT + 10):
        state.approve(s, ApproveRequest(f"r{n}"), T0)
    assert len(s.approval_outcomes) == state.APPROVAL_OUTCOMES_KEPT
    assert state.outcome_of(s, "r0") is None  # the applied one aged out
    for n in range(10):
        state.record_signal_problem(s, "stop", "x" * 5000 + str(n), T0)
    assert len(s.signal_input_problems) == state.SIGNAL_INPUT_PROBLEMS_KEPT
    assert all(len(p) <= state.MAX_SIGNAL_INPUT_PROBLEM_CHARS for p in s.signal_input_problems)


def test_a_pause_at_an_unreadable_time_stands_at_now() -> None:
    s = CampaignState()
    state.pause(s, "yesterday-ish", "ops", T0)
    assert s.campaign_paused is not None and s.campaign_paused.at == T0.isoformat()
    state.resume(s)
    assert s.campaign_paused is None


def test_unfinished_notices_are_carried_newest_kept() -> None:
    s = at_gate()
    sent = [
        PendingApprovalNotice("a", "c", "i", "l", f"s{n}", "https://hooks.test/x")
        for n in range(state.NOTICES_CARRIED + 3)
    ]
    for notice in sent:
        state.notice_started(s, notice)
    state.notice_started(s, sent[0])  # once, even when started again
    state.notice_finished(s, sent[1])
    carried = _round_trip(s)
    assert [n.step_id for n in carried.notices] == [
        n.step_id for n in [sent[0], *sent[2:]][-state.NOTICES_CARRIED :]
    ]


# --- inbound mail -----------------------------------------------------------------------------


def test_a_reply_stops_with_its_excerpt_once() -> None:
    s = at_gate()
    event = InboundEvent("in-1", "reply", "2026-12-04T10:00:00+00:00", "Thanks, call me Friday")
    record = state.apply_inbound(s, event, T0)
    assert record is not None and record.excerpt == "Thanks, call me Friday"
    assert s.stop is not None and s.stop.reason == StopReason.LEAD_REPLIED
    assert state.apply_inbound(s, event, T0) is None  # resent by its source: applied once
    assert len(s.inbound_messages) == 1
    assert state.approve(s, ApproveRequest("r1"), T0) == ApprovalRefusal.WORKFLOW_CLOSED


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("hard_bounce", StopReason.LEAD_BOUNCED),
        ("complaint", StopReason.LEAD_COMPLAINED),
        ("unsubscribe", StopReason.LEAD_UNSUBSCRIBED),
        ("reply", StopReason.LEAD_REPLIED),
        ("auto_reply", None),
        ("soft_bounce", None),
    ],
)
def test_what_each_inbound_kind_does(kind: str, reason: StopReason | None) -> None:
    s = at_gate()
    state.apply_inbound(s, InboundEvent("in-1", kind, excerpt="text"), T0)
    assert (s.stop.reason if s.stop else None) == reason
    [record] = s.inbound_messages
    # Only a reply keeps its text.
    assert record.excerpt == ("text" if kind == "reply" else "")


def test_an_auto_reply_keeps_its_return_date_and_nothing_odd() -> None:
    s = at_gate()
    state.apply_inbound(
        s, InboundEvent("a", "auto_reply", "yesterday", return_date="2026-12-14"), T0
    )
    state.apply_inbound(
        s, InboundEvent("b", "auto_reply", "2026-12-04T10:00", return_date="soon"), T0
    )
    assert [(r.received_at, r.return_date) for r in s.inbound_messages] == [
        (T0, "2026-12-14"),
        (T0, None),  # a time without a zone stands for now; a return date that is no date drops
    ]
    assert state.apply_inbound(s, InboundEvent("c", "unknown"), T0) is None
    assert state.apply_inbound(s, InboundEvent("d", "REPLY"), T0) is None
    assert s.stop is None


def test_inbound_records_and_excerpts_are_bounded() -> None:
    s = at_gate()
    for n in range(state.INBOUND_MESSAGES_KEPT + 4):
        state.apply_inbound(s, InboundEvent(f"m{n}", "auto_reply"), T0)
    assert s.inbound_messages[0].inbound_message_id == "m4"
    assert len(s.inbound_messages) == state.INBOUND_MESSAGES_KEPT
    # A message resent after its record aged out still applies once.
    assert state.apply_inbound(s, InboundEvent("m0", "reply"), T0) is None
    assert s.stop is None
    state.apply_inbound(s, InboundEvent("long", "reply", excerpt="x" * 5000), T0)
    assert len(s.inbound_messages[-1].excerpt) == state.MAX_EXCERPT_CHARS
    assert s.inbound_messages[-1].kind == InboundKind.REPLY


# --- continuing as new ------------------------------------------------------------------------


def test_carry_counts_runs_and_drops_the_legacy_form() -> None:
    s = at_gate()
    nxt = state.carry(s, _input())
    assert nxt.carried is None and nxt.state is not None and nxt.state.runs == 2
    assert s.runs == 1  # the live state is not changed by carrying it


def test_a_legacy_carried_state_is_read_field_by_field() -> None:
    """Runs continued as new by code from before the state refactor carry `CarriedState`."""
    legacy = replace(
        _input(),
        carried=CarriedState(
            resume=ResumePoint(
                1,
                at=ResumeAt.GATE,
                content=CONTENT,
                gate_expires_at=T0 + timedelta(hours=2),
                gate_id="g9",
                gate_opened_at=T0 - timedelta(hours=1),
            ),
            latest_step="next",
            runs=3,
            campaign_paused=[T0.isoformat(), "ops"],
        ),
    )
    s = state.restore(legacy, T0)
    assert (s.step_index, s.at, s.latest_step, s.runs) == (1, ResumeAt.GATE, "next", 3)
    assert s.gate == Gate("g9", T0 - timedelta(hours=1), T0 + timedelta(hours=2))
    assert s.campaign_paused is not None and s.campaign_paused.decided_by == "ops"
    # A gate carried before gate ids had none: the run opens it under a new one, now.
    no_id = replace(
        legacy.carried.resume,  # type: ignore[union-attr]
        gate_id=None,
        gate_opened_at=None,
    )
    older = replace(legacy, carried=replace(legacy.carried, resume=no_id))  # type: ignore[type-var]
    assert state.restore(older, T0).gate == Gate("", T0, T0 + timedelta(hours=2))
    delay = replace(
        legacy,
        carried=CarriedState(ResumePoint(0, at=ResumeAt.DELAY, delay_until=T0)),
    )
    assert state.restore(delay, T0).delay_until == T0


# --- properties over arbitrary signal sequences -------------------------------------------------

_REASONS = [
    StopReason.CONTENT_DISCARDED,
    StopReason.LEAD_REPLIED,
    StopReason.LEAD_UNSUBSCRIBED,
    StopReason.STOPPED_BY_OPERATOR,
    StopReason.APPROVAL_EXPIRED,
]
_operation = st.one_of(
    st.tuples(
        st.just("approve"),
        st.sampled_from(["r1", "r2", "r3", ""]),
        st.sampled_from([None, [], ["*"], ["g1-1"], ["g1-3"], ["g1-1", "g2-3"], ["x"]]),
    ),
    st.tuples(st.just("stop"), st.sampled_from(_REASONS)),
    st.tuples(st.just("pause"), st.sampled_from([T0.isoformat(), "garbage"])),
    st.tuples(st.just("resume")),
    st.tuples(st.just("problem"), st.text(max_size=40)),
    st.tuples(st.just("loop"), st.sampled_from(["gate1", "gate2", "deliver", "defer", "delay"])),
    st.tuples(st.just("end_if_stopped")),
    st.tuples(
        st.just("inbound"),
        st.sampled_from(["i1", "i2", ""]),
        st.sampled_from(["reply", "auto_reply", "hard_bounce", "complaint", "x"]),
    ),
    # An out-of-office answer in a campaign with `outOfOfficeHold` (1 day or 14): back in -1 to
    # 90 days, received up to a day before or after the signal's time.
    st.tuples(
        st.just("out_of_office"),
        st.sampled_from(["o1", "o2", "o3", ""]),
        st.integers(min_value=-1, max_value=90),
        st.integers(min_value=-24, max_value=24),
        st.sampled_from([86400.0, 14 * 86400.0]),
    ),
    st.tuples(st.just("hold_ends")),
)


def _apply(s: CampaignState, op: tuple[object, ...], now: datetime) -> ApprovalRefusal | None:
    """One signal or run-loop step, as the workflow would call it."""
    kind = op[0]
    if kind == "approve":
        request_id, if_match = op[1], op[2]
        assert isinstance(request_id, str)
        assert if_match is None or isinstance(if_match, list)
        return state.approve(s, ApproveRequest(request_id, "key", if_match), now)
    if kind == "stop":
        assert isinstance(op[1], StopReason)
        state.request_stop(s, op[1], "ops", "note", now)
    elif kind == "pause":
        assert isinstance(op[1], str)
        state.pause(s, op[1], "ops", now)
    elif kind == "resume":
        state.resume(s)
    elif kind == "problem":
        assert isinstance(op[1], str)
        state.record_signal_problem(s, "stop", op[1], now)
    elif kind == "end_if_stopped":
        state.end_if_stop_requested(s)
    elif kind == "inbound":
        assert isinstance(op[1], str) and isinstance(op[2], str)
        state.apply_inbound(s, InboundEvent(op[1], op[2], excerpt="hi"), now)
    elif kind == "out_of_office":
        message_id, back_in, received, hold = op[1:]
        assert isinstance(message_id, str) and isinstance(back_in, int)
        assert isinstance(received, int) and isinstance(hold, float)
        back = (now + timedelta(days=back_in)).date().isoformat()
        at = (now + timedelta(hours=received)).isoformat()
        event = InboundEvent(message_id, "auto_reply", at, return_date=back)
        state.apply_inbound(s, event, now, out_of_office_hold_seconds=hold)
    elif kind == "hold_ends":
        # The run loop asks before each delivery attempt, once the hold may have passed.
        state.out_of_office_until(s, now + timedelta(days=100))
    elif s.phase not in CLOSED_PHASES and s.stop is None:
        step = op[1]
        if step in ("gate1", "gate2") and s.phase != Phase.AWAITING_APPROVAL:
            state.begin_step(s, "intro")
            state.drafted(s, CONTENT)
            # Gate ids are unique per opening, as the workflow's are.
            state.open_gate(s, Gate(f"g{len(s.gate_decisions) + 1}-{now.second}", now, None))
        elif step == "deliver" and s.at == ResumeAt.DELIVERY:
            state.record_delivery(s, "intro", DeliveryReceipt("m"), now)
        elif step == "defer" and s.at == ResumeAt.DELIVERY:
            state.defer(s, "intro", DeliveryReceipt("m", DeliveryOutcome.DEFERRED))
        elif step == "delay" and s.at == ResumeAt.DELAY:
            state.start_delay(s, now + timedelta(minutes=1))
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(_operation, max_size=40))
def test_any_signal_sequence_keeps_the_state_whole(operations: list[tuple[object, ...]]) -> None:
    s = CampaignState()
    for n, op in enumerate(operations):
        now = T0 + timedelta(seconds=n)
        before = copy.deepcopy(s)
        refusal = _apply(s, op, now)

        # A closed instance never changes phase, and an approval never applies to it.
        if before.phase in CLOSED_PHASES:
            assert s.phase == before.phase
        # The first stop wins.
        if before.stop is not None:
            assert s.stop == before.stop
        # An applied approval closes the gate and releases the content for delivery: a run that
        # continues as new from here delivers, it never reopens the gate.
        if op[0] == "approve" and refusal is None and before.phase == Phase.AWAITING_APPROVAL:
            assert (s.gate, s.at, s.phase) == (None, ResumeAt.DELIVERY, Phase.DELIVERING)
        # A gate is open exactly while the phase says so (until the instance ends).
        if s.phase not in CLOSED_PHASES:
            assert (s.gate is not None) == (s.phase == Phase.AWAITING_APPROVAL)
        # Each gate is approved at most once; bounded records; one outcome per request id.
        approved = [d.gate_id for d in s.gate_decisions if d.decision == Decision.APPROVED]
        assert len(approved) == len(set(approved))
        ids = [r.request_id for r in s.approval_outcomes]
        assert len(ids) == len(set(ids)) <= state.APPROVAL_OUTCOMES_KEPT
        assert len(s.signal_input_problems) <= state.SIGNAL_INPUT_PROBLEMS_KEPT
        # An inbound message id applies once.
        inbound_ids = [r.inbound_message_id for r in s.inbound_messages if r.inbound_message_id]
        assert len(inbound_ids) == len(set(inbound_ids))
        # An out-of-office hold: never on a closed instance, never past its cap (60 days at
        # most after now), always from a recorded answer with its return date.
        hold = s.out_of_office_hold
        if hold is not None:
            assert s.phase not in CLOSED_PHASES
            assert hold.until <= now + state.MAX_OUT_OF_OFFICE_HOLD
            assert hold.until <= datetime.fromisoformat(hold.return_date).replace(tzinfo=UTC)
            if hold != before.out_of_office_hold:
                assert hold.until > now and s.inbound_messages[-1].return_date == hold.return_date

        # Whatever happened, continuing as new now carries all of it.
        carried = _round_trip(s)
        assert carried == replace(s, runs=s.runs + 1)


def test_every_field_of_the_state_survives_the_converter() -> None:
    """A state with every field set comes back equal: nothing is dropped by carrying it."""
    s = at_gate()
    state.approve(s, ApproveRequest("r1"), T0)
    state.request_stop(s, StopReason.STOPPED_BY_OPERATOR, "ops", "why", T0)
    state.record_signal_problem(s, "stop", "odd", T0)
    state.pause(s, T0.isoformat(), "ops", T0)
    state.notice_started(s, PendingApprovalNotice("a", "c", "i", "l", "intro", "https://h.test"))
    state.apply_inbound(
        s,
        InboundEvent("m", "auto_reply", return_date="2026-12-14"),
        T0,
        out_of_office_hold_seconds=86400.0,
    )
    assert s.out_of_office_hold is not None and s.out_of_office_hold.capped
    s.scheduled = state.defer(
        s, "intro", DeliveryReceipt("m", DeliveryOutcome.DEFERRED, send_at=T0, send_at_local="x")
    )
    s.delay_until = T0
    s.stop_reason = StopReason.DELIVERY_FAILED
    s.failure = FailureRecord("intro", "X", "boom", 3)
    state.record_delivery(s, "intro", DeliveryReceipt("m", DeliveryOutcome.IN_DOUBT), T0)
    s.scheduled = state.defer(s, "intro", DeliveryReceipt("m", DeliveryOutcome.DEFERRED))
    s.gate = Gate("g", T0, T0)
    unset = [f.name for f in fields(s) if getattr(s, f.name) in (None, [], 0, "")]
    assert unset == ["step_index"], "set every field, so the round trip checks each"
    assert _round_trip(s) == replace(s, runs=s.runs + 1)


# --- the pure modules read no clock -----------------------------------------------------------

PURE_MODULES = [
    "state.py",
    "status.py",
    "notices.py",
    "search_attributes.py",
    "signal_inputs.py",
    "activity_options.py",
    "mailbox_types.py",
]
_FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "random", "uuid4", "monotonic", "sleep"}
_FORBIDDEN_IMPORTS = {"random", "time", "uuid", "os", "asyncio", "temporalio.workflow"}


def test_pure_workflow_modules_read_no_clock_and_do_no_io() -> None:
    """They are passed through the workflow sandbox (not re-imported per instance), so the
    sandbox's own checks do not see them: this one does."""
    workflows = Path(__file__).parent.parent / "workflows"
    for name in PURE_MODULES:
        tree = ast.parse((workflows / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                names = [module] if module else [a.name for a in node.names]
                if isinstance(node, ast.ImportFrom) and module == "temporalio":
                    names = [f"temporalio.{a.name}" for a in node.names]
                assert not set(names) & _FORBIDDEN_IMPORTS, (name, names)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in _FORBIDDEN_CALLS, (name, node.func.attr)


def test_the_workflow_imports_its_modules_so_the_sandbox_passes_them_through() -> None:
    """`from workflows import state` reaches the submodule through the sandbox's own copy of
    the `workflows` package and imports it afresh for every instance (measured: +29 KB a cached
    instance); `import workflows.state as state` and `from workflows.types import X` pass the
    host's module through."""
    source = (Path(__file__).parent.parent / "workflows" / "campaign.py").read_text()
    offending = [
        ast.unparse(node)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module == "workflows"
    ]
    assert offending == []
