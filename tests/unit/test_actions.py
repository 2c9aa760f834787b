"""Responders' case actions: status rules, who may act, and what each action records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from errors import Conflict, Forbidden, NotFound, Rejected, Unacceptable
from handlers.actions import ACTION_HANDLERS, may_act
from handlers.cases import deadlines
from handlers.context import Ctx
from handlers.escalation import clock_start, next_deadline
from handlers.model import CASE_STATUSES, Aggregate, Case, Worker, iso
from handlers.policy import Policy, load_policy
from schemas.envelope import Envelope
from tests.unit.factories import fast_policy

T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
S = timedelta(seconds=1)
WORKER = "PMI-2024-000123"
CASE = "case-1"


FAST = fast_policy()

# Minimal valid data per action type (besides case_id, worker_id, actor, post_id).
EXTRA = {
    "pmi.case.acknowledged": {},
    "pmi.case.note-added": {"note": "called the employer"},
    "pmi.case.referred": {"to": "IOM Malaysia"},
    "pmi.case.resolved": {"resolution": "worker repatriated", "note": "flight GA-821"},
    "pmi.case.reopened": {},
}
OUTPUT = {
    "pmi.case.acknowledged": "garda.case.acknowledged",
    "pmi.case.note-added": "garda.case.note-added",
    "pmi.case.referred": "garda.case.referred",
    "pmi.case.resolved": "garda.case.resolved",
    "pmi.case.reopened": "garda.case.reopened",
}
STATUS_AFTER = {
    "pmi.case.acknowledged": "acknowledged",
    "pmi.case.note-added": None,  # unchanged
    "pmi.case.referred": None,
    "pmi.case.resolved": "resolved",
    "pmi.case.reopened": "reopened",
}
OUTCOME = {
    "pmi.case.acknowledged": "acknowledged",
    "pmi.case.note-added": "noted",
    "pmi.case.referred": "referred",
    "pmi.case.resolved": "resolved",
    "pmi.case.reopened": "reopened",
}

# action x status -> None (allowed) or the Rejected subclass raised
MATRIX = {
    "pmi.case.acknowledged": {
        "open": None,
        "acknowledged": Conflict,
        "reopened": None,
        "resolved": Conflict,
    },
    "pmi.case.note-added": {"open": None, "acknowledged": None, "reopened": None, "resolved": None},
    "pmi.case.referred": {
        "open": None,
        "acknowledged": None,
        "reopened": None,
        "resolved": Conflict,
    },
    "pmi.case.resolved": {
        "open": None,
        "acknowledged": None,
        "reopened": None,
        "resolved": Conflict,
    },
    "pmi.case.reopened": {
        "open": Conflict,
        "acknowledged": Conflict,
        "reopened": Conflict,
        "resolved": None,
    },
}
ACTIONS = list(EXTRA)


def make_case(status: str = "open", level: int = 0, severity: str = "critical") -> Case:
    ack_due, resolve_due = deadlines(FAST, severity, T0)
    case = Case(
        case_id=CASE,
        worker_id=WORKER,
        kind="protection",
        category="accident",
        severity=severity,
        post_id="CON",
        opened_at=T0,
        status=status,
        escalation_level=level,
        ack_due=ack_due,
        resolve_due=resolve_due,
    )
    if status in ("acknowledged", "resolved"):
        case.acknowledged_at = T0 + S
    if status == "resolved":
        case.resolved_at = T0 + 2 * S
        case.detail["resolution"] = "done"
    if level:
        case.escalated_to = {1: "EMB", 2: "HQ"}[level]
    return case


def agg_of(*cases: Case) -> Aggregate:
    return Aggregate(worker=Worker(WORKER), cases={c.case_id: c for c in cases}, exists=True)


_seq = iter(range(1_000_000))


def act(
    agg: Aggregate,
    type_: str,
    *,
    post_id: str = "CON",
    case_id: str = CASE,
    time: datetime | None = None,
    now: datetime | None = None,
    policy: Policy = FAST,
    **fields: object,
) -> Ctx:
    data = {
        "case_id": case_id,
        "worker_id": WORKER,
        "actor": "officer-7",
        "post_id": post_id,
        **EXTRA[type_],
        **fields,
    }
    data = {k: v for k, v in data.items() if v is not None}
    now = now or T0 + 100 * S
    env = Envelope(
        id=f"evt-{next(_seq)}",
        source="kjri-test/case-desk",
        type=type_,
        subject=WORKER,
        data=data,
        time=time or now - S,
    )
    ctx = Ctx(envelope=env, policy=policy, now=now)
    ACTION_HANDLERS[type_](agg, ctx)
    return ctx


def test_registration() -> None:
    assert set(ACTION_HANDLERS) == {
        "pmi.case.acknowledged",
        "pmi.case.note-added",
        "pmi.case.referred",
        "pmi.case.resolved",
        "pmi.case.reopened",
    }


# --- every action x every status ------------------------------------------------------------


@pytest.mark.parametrize("status", CASE_STATUSES)
@pytest.mark.parametrize("type_", ACTIONS)
def test_action_by_status(type_: str, status: str) -> None:
    case = make_case(status)
    agg = agg_of(case)
    expected = MATRIX[type_][status]
    if expected is not None:
        before = case.to_doc()
        with pytest.raises(Rejected) as exc:
            act(agg, type_)
        assert type(exc.value) is expected
        assert case.to_doc() == before
        return
    ctx = act(agg, type_)
    assert case.status == (STATUS_AFTER[type_] or status)
    assert ctx.outcome == OUTCOME[type_]
    [entry] = ctx.effects.timeline
    assert entry.type == OUTPUT[type_]
    assert entry.case_id == CASE
    assert entry.actor == "officer-7"
    assert entry.at == T0 + 99 * S  # the event time (no data.at)
    assert entry.detail["post_id"] == "CON"
    case_events = [e for e in ctx.effects.events if e.type.startswith("garda.case.")]
    assert [e.type for e in case_events] == [OUTPUT[type_]]
    assert case_events[0].data["status"] == case.status
    assert case_events[0].data["event"]["actor"] == "officer-7"


def test_matrix_covers_every_status() -> None:
    for row in MATRIX.values():
        assert set(row) == set(CASE_STATUSES)


@pytest.mark.parametrize("type_", ACTIONS)
def test_unknown_case_is_404(type_: str) -> None:
    agg = agg_of(make_case("resolved" if type_ == "pmi.case.reopened" else "open"))
    with pytest.raises(Rejected) as exc:
        act(agg, type_, case_id="no-such-case")
    assert isinstance(exc.value, NotFound)
    with pytest.raises(Rejected) as exc:
        act(agg_of(), type_)
    assert isinstance(exc.value, NotFound)


# --- who may act ------------------------------------------------------------------------------

# (acting post, escalation level) -> allowed
WHO = [
    ("CON", 0, True),  # the assigned post
    ("CON", 2, True),
    ("HQ", 0, True),  # headquarters: any case
    ("HQ", 1, True),
    ("EMB", 0, False),  # head of mission: only once escalated to it
    ("EMB", 1, True),
    ("EMB", 2, True),  # stays involved at level 2
    ("CON2", 0, False),  # a sibling consulate
    ("CON2", 2, False),
    ("OTHER", 0, False),
    ("OTHER", 2, False),
    ("", 0, False),
]


@pytest.mark.parametrize(("post_id", "level", "allowed"), WHO)
@pytest.mark.parametrize("type_", ACTIONS)
def test_who_may_act(type_: str, post_id: str, level: int, allowed: bool) -> None:
    status = "resolved" if type_ == "pmi.case.reopened" else "open"
    case = make_case(status, level=level)
    assert may_act(case, post_id, FAST) is allowed
    if allowed:
        ctx = act(agg_of(case), type_, post_id=post_id)
        assert ctx.effects.timeline[0].detail["post_id"] == post_id
    else:
        with pytest.raises(Rejected) as exc:
            act(agg_of(case), type_, post_id=post_id)
        assert isinstance(exc.value, Forbidden)


def test_head_of_mission_allowed_from_the_ladder_even_without_detail() -> None:
    case = make_case("open", level=1)
    case.detail.clear()
    assert may_act(case, "EMB", FAST)


def test_wrong_post_checked_before_status() -> None:
    case = make_case("resolved")
    with pytest.raises(Rejected) as exc:
        act(agg_of(case), "pmi.case.acknowledged", post_id="OTHER")
    assert isinstance(exc.value, Forbidden)


def test_default_policy_head_of_mission() -> None:
    policy = load_policy()
    case = make_case("open", level=1)
    case.post_id = "KJRI-JOHOR-BAHRU"
    case.detail.clear()
    assert may_act(case, "KBRI-KUALA-LUMPUR", policy)
    assert may_act(case, policy.headquarters, policy)
    assert not may_act(case, "KJRI-PENANG", policy)
    case.escalation_level = 0
    assert not may_act(case, "KBRI-KUALA-LUMPUR", policy)


# --- times ------------------------------------------------------------------------------------


def test_action_at_is_used_for_timeline_and_case() -> None:
    case = make_case("open")
    at = T0 + 42 * S
    ctx = act(agg_of(case), "pmi.case.acknowledged", at=iso(at))
    assert case.acknowledged_at == at
    assert ctx.effects.timeline[0].at == at
    assert ctx.effects.events[0].data["event"]["at"] == iso(at)


def test_action_at_in_the_future_is_capped_at_now() -> None:
    case = make_case("open")
    now = T0 + 100 * S
    ctx = act(agg_of(case), "pmi.case.acknowledged", at=iso(now + 3600 * S), now=now)
    assert case.acknowledged_at == now
    assert ctx.effects.timeline[0].at == now


def test_action_at_as_datetime_is_accepted() -> None:
    case = make_case("open")
    act(agg_of(case), "pmi.case.resolved", at=T0 + 50 * S)
    assert case.resolved_at == T0 + 50 * S


def test_event_time_in_the_future_falls_back_to_now() -> None:
    case = make_case("open")
    now = T0 + 100 * S
    ctx = act(agg_of(case), "pmi.case.acknowledged", time=now + 3600 * S, now=now)
    assert ctx.effects.timeline[0].at == now


# --- each action's effect ---------------------------------------------------------------------


def test_acknowledge_stops_the_ack_clock() -> None:
    case = make_case("open")
    act(agg_of(case), "pmi.case.acknowledged")
    assert case.status == "acknowledged"
    assert case.acknowledged_at == T0 + 99 * S
    assert next_deadline(case, FAST) == (case.resolve_due, "resolve", 1)


def test_second_acknowledge_is_409() -> None:
    agg = agg_of(make_case("open"))
    act(agg, "pmi.case.acknowledged")
    with pytest.raises(Rejected) as exc:
        act(agg, "pmi.case.acknowledged", actor="officer-8")
    assert isinstance(exc.value, Conflict)
    assert "already acknowledged" in exc.value.reason


@pytest.mark.parametrize("status", CASE_STATUSES)
def test_note_on_any_status_is_recorded_and_published(status: str) -> None:
    case = make_case(status)
    before = {k: v for k, v in case.to_doc().items() if k != "updated_at"}
    ctx = act(agg_of(case), "pmi.case.note-added", note="family informed")
    assert {k: v for k, v in case.to_doc().items() if k != "updated_at"} == before
    assert ctx.effects.timeline[0].detail == {"post_id": "CON", "note": "family informed"}
    [event] = ctx.effects.events
    assert event.type == "garda.case.note-added"
    assert event.data["event"]["note"] == "family informed"


def test_two_notes_are_both_recorded() -> None:
    agg = agg_of(make_case("open"))
    assert act(agg, "pmi.case.note-added").outcome == "noted"
    assert act(agg, "pmi.case.note-added").outcome == "noted"


@pytest.mark.parametrize(
    ("type_", "field"),
    [
        ("pmi.case.note-added", "note"),
        ("pmi.case.referred", "to"),
        ("pmi.case.resolved", "resolution"),
    ],
)
@pytest.mark.parametrize("value", [None, "", "   "])
def test_required_text_is_422(type_: str, field: str, value: str | None) -> None:
    case = make_case("open")
    before = case.to_doc()
    with pytest.raises(Rejected) as exc:
        act(agg_of(case), type_, **{field: value})
    assert isinstance(exc.value, Unacceptable)
    assert case.to_doc() == before


@pytest.mark.parametrize("status", ["open", "acknowledged", "reopened"])
def test_refer_records_to_and_keeps_status(status: str) -> None:
    case = make_case(status)
    agg = agg_of(case)
    ctx = act(agg, "pmi.case.referred", to="IOM Malaysia")
    assert case.status == status
    assert case.detail["referred_to"] == "IOM Malaysia"
    assert case.detail["referrals"] == [
        {"to": "IOM Malaysia", "at": iso(T0 + 99 * S), "actor": "officer-7"}
    ]
    assert ctx.effects.timeline[0].detail["to"] == "IOM Malaysia"
    assert ctx.effects.events[0].data["event"]["to"] == "IOM Malaysia"
    with pytest.raises(Rejected) as exc:
        act(agg, "pmi.case.referred", to="IOM Malaysia")
    assert isinstance(exc.value, Conflict)
    act(agg, "pmi.case.referred", to="Tenaganita")
    assert case.detail["referred_to"] == "Tenaganita"
    assert [r["to"] for r in case.detail["referrals"]] == ["IOM Malaysia", "Tenaganita"]


def test_resolve_sets_resolution_and_stops_all_clocks() -> None:
    case = make_case("acknowledged", level=1)
    agg = agg_of(case)
    ctx = act(agg, "pmi.case.resolved", resolution="wages paid", note="receipt on file")
    assert case.status == "resolved"
    assert case.resolved_at == T0 + 99 * S
    assert case.detail["resolution"] == "wages paid"
    assert ctx.effects.timeline[0].detail == {
        "post_id": "CON",
        "resolution": "wages paid",
        "note": "receipt on file",
    }
    assert next_deadline(case, FAST) is None
    snapshots = [e for e in ctx.effects.events if e.type == "garda.worker.state"]
    assert len(snapshots) == 1
    assert snapshots[0].data["open_cases"] == []
    assert snapshots[0].data["in_crisis"] is False
    with pytest.raises(Rejected) as exc:
        act(agg, "pmi.case.resolved")
    assert isinstance(exc.value, Conflict)
    assert "already resolved" in exc.value.reason


@pytest.mark.parametrize("level", [0, 1, 2])
def test_reopen_restarts_deadlines_from_event_time(level: int) -> None:
    case = make_case("resolved", level=level)
    case.resolve_deadline_missed = case.resolve_due
    agg = agg_of(case)
    event_time = T0 + 1000 * S
    ctx = act(
        agg,
        "pmi.case.reopened",
        time=event_time,
        now=event_time + 5 * S,
        at=iso(event_time - 30 * S),  # the officer's own time: timeline only
    )
    assert case.status == "reopened"
    assert case.opened_at == T0
    assert case.escalation_level == level
    assert (case.ack_due, case.resolve_due) == deadlines(FAST, "critical", event_time)
    assert (case.ack_due, case.resolve_due) == (event_time + 10 * S, event_time + 300 * S)
    assert clock_start(case) == event_time
    assert case.acknowledged_at is None and case.resolved_at is None
    assert case.resolve_deadline_missed is None
    assert "resolution" not in case.detail
    assert ctx.effects.timeline[0].at == event_time - 30 * S
    assert ctx.effects.timeline[0].detail["ack_due"] == iso(event_time + 10 * S)
    assert ctx.effects.events[0].data["ack_due"] == iso(event_time + 10 * S)
    expected_next = {
        0: (event_time + 10 * S, "ack", 1),
        1: (event_time + 40 * S, "ack", 2),
        2: None,
    }[level]
    assert next_deadline(case, FAST) == expected_next
    snapshots = [e for e in ctx.effects.events if e.type == "garda.worker.state"]
    assert snapshots[0].data["open_cases"] == [CASE]
    # a second reopen (another event, same effect) is refused
    with pytest.raises(Rejected) as exc:
        act(agg, "pmi.case.reopened")
    assert isinstance(exc.value, Conflict)
    # and the reopened case needs acknowledging again
    act(agg, "pmi.case.acknowledged")
    assert case.status == "acknowledged"


def test_full_lifecycle() -> None:
    case = make_case("open")
    agg = agg_of(case)
    steps = [
        ("pmi.case.note-added", "open"),
        ("pmi.case.acknowledged", "acknowledged"),
        ("pmi.case.referred", "acknowledged"),
        ("pmi.case.resolved", "resolved"),
        ("pmi.case.note-added", "resolved"),
        ("pmi.case.reopened", "reopened"),
        ("pmi.case.resolved", "resolved"),
    ]
    for type_, status in steps:
        act(agg, type_)
        assert case.status == status, type_


def test_timeline_and_event_ids_are_deterministic() -> None:
    def once() -> list[str]:
        case = make_case("open")
        env = Envelope(
            id="fixed",
            source="kjri-test/case-desk",
            type="pmi.case.resolved",
            subject=WORKER,
            data={
                "case_id": CASE,
                "worker_id": WORKER,
                "actor": "o",
                "post_id": "CON",
                "resolution": "r",
            },
            time=T0 + 5 * S,
        )
        ctx = Ctx(envelope=env, policy=FAST, now=T0 + 6 * S)
        ACTION_HANDLERS["pmi.case.resolved"](agg_of(case), ctx)
        return [e.id for e in ctx.effects.events] + [t.entry_id for t in ctx.effects.timeline]

    assert once() == once()
