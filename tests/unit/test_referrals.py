"""Referral clocks: start, answer, lapse (exactly once), decline back to the post's queue."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from errors import Conflict, Unacceptable
from handlers import clocks, referrals
from handlers.cases import deadlines
from handlers.dispatch import handle
from handlers.model import Aggregate, Case, Worker, iso
from handlers.policy import load_policy
from handlers.prevention_policy import Prevention, Referrals
from schemas.envelope import Envelope
from schemas.types import validate_data
from tests.unit.factories import fast_policy

T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
S = timedelta(seconds=1)
WORKER = "PMI-2024-000123"
WINDOW = 100 * S
FAST = replace(
    fast_policy(),
    prevention=Prevention(
        referrals=Referrals(
            answer_within={
                "critical": WINDOW,
                "high": 2 * WINDOW,
                "medium": 3 * WINDOW,
                "low": 3 * WINDOW,
            }
        )
    ),
)
_n = iter(range(1, 10_000))


def agg_with_case(severity: str = "critical", *, level: int = 0, status: str = "open") -> Aggregate:
    ack_due, resolve_due = deadlines(FAST, severity, T0)
    case = Case(
        case_id="case-1",
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
    return Aggregate(
        worker=Worker(worker_id=WORKER, state="placed"), cases={"case-1": case}, exists=True
    )


def act(agg: Aggregate, type_: str, at: datetime, now: datetime | None = None, **extra: str):
    data = {
        "case_id": "case-1",
        "worker_id": WORKER,
        "actor": "officer-1",
        "post_id": "CON",
        **extra,
    }
    data = validate_data(type_, data)
    env = Envelope(
        id=f"a-{next(_n)}", source="test", type=type_, subject=WORKER, data=data, time=at
    )
    return handle(agg, env, FAST, now or at, received_at=at)


def due_command(agg: Aggregate, now: datetime, due_at: datetime | None = None):
    case = agg.cases["case-1"]
    due = due_at or referrals.referral_due(case)
    data = {"case_id": "case-1", "worker_id": WORKER, "due_at": iso(due)}
    env = Envelope(
        id=f"t-{next(_n)}",
        source="garda/timer",
        type=referrals.DUE_COMMAND,
        subject=WORKER,
        data=data,
        time=now,
    )
    return handle(agg, env, FAST, now)


def referred(severity: str = "critical", **kw) -> Aggregate:
    agg = agg_with_case(severity, **kw)
    return act(agg, "pmi.case.referred", T0 + S, to="IOM Malaysia").aggregate


def test_referral_starts_a_clock_per_severity() -> None:
    for severity, window in (("critical", WINDOW), ("high", 2 * WINDOW), ("low", 3 * WINDOW)):
        res = act(agg_with_case(severity), "pmi.case.referred", T0 + S, to="IOM Malaysia")
        case = res.aggregate.cases["case-1"]
        assert referrals.referral_due(case) == T0 + S + window
        assert case.detail["referral"]["state"] == "pending"
        event = next(e for e in res.effects.events if e.type == "garda.case.referred")
        assert event.data["event"]["answer_due"] == iso(T0 + S + window)


def test_next_due_includes_the_referral_clock() -> None:
    agg = referred("low")  # low: ack 70 s, no level 2; referral 300 s
    case = agg.cases["case-1"]
    assert clocks.case_next_due(case, FAST) == T0 + 70 * S  # the ack clock first
    acked = act(agg, "pmi.case.acknowledged", T0 + 2 * S).aggregate.cases["case-1"]
    assert clocks.case_next_due(acked, FAST) == T0 + S + 3 * WINDOW  # then the referral


def test_accepted_stops_the_clock() -> None:
    agg = referred()
    res = act(agg, "pmi.case.referral-accepted", T0 + 50 * S, note="shelter place")
    case = res.aggregate.cases["case-1"]
    assert referrals.referral_due(case) is None
    assert case.detail["referral"]["state"] == "accepted"
    assert case.detail["referrals"][-1]["answer"] == "accepted"
    types = [e.type for e in res.effects.events]
    assert "garda.case.referral-accepted" in types
    assert res.outcome == "referral-accepted"
    assert [t.type for t in res.effects.timeline] == ["garda.case.referral-accepted"]


def test_declined_returns_the_case_to_its_post_with_an_alert() -> None:
    agg = referred()
    res = act(agg, "pmi.case.referral-declined", T0 + 50 * S, note="no capacity")
    case = res.aggregate.cases["case-1"]
    assert referrals.referral_due(case) is None
    assert "referred_to" not in case.detail
    assert case.post_id == "CON" and case.is_open
    alert = next(e for e in res.effects.events if e.type == "garda.alert.referral-declined")
    assert alert.data["post_id"] == "CON"
    assert alert.data["note"] == "no capacity"
    # the post may refer again, to the same organisation too
    again = act(res.aggregate, "pmi.case.referred", T0 + 60 * S, to="IOM Malaysia")
    assert referrals.referral_due(again.aggregate.cases["case-1"]) == T0 + 60 * S + WINDOW


@pytest.mark.parametrize("answer", [referrals.ACCEPTED, referrals.DECLINED])
def test_answer_without_referral_or_twice_is_a_conflict(answer: str) -> None:
    with pytest.raises(Conflict):
        act(agg_with_case(), answer, T0 + S)
    once = act(referred(), answer, T0 + 5 * S).aggregate
    with pytest.raises(Conflict):
        act(once, answer, T0 + 6 * S)


def test_answer_on_a_resolved_case_is_a_conflict() -> None:
    agg = act(referred(), "pmi.case.resolved", T0 + 2 * S, resolution="done").aggregate
    with pytest.raises(Conflict):
        act(agg, referrals.ACCEPTED, T0 + 3 * S)


def test_answer_dated_before_the_referral_is_refused() -> None:
    agg = agg_with_case()
    agg = act(agg, "pmi.case.referred", T0 + 10 * S, to="IOM Malaysia").aggregate
    with pytest.raises(Unacceptable):
        act(agg, referrals.ACCEPTED, T0 + 5 * S, now=T0 + 20 * S)


def test_lapse_escalates_one_level_exactly_at_the_deadline() -> None:
    agg = act(referred(), "pmi.case.acknowledged", T0 + 2 * S).aggregate
    due = T0 + S + WINDOW
    assert referrals.due_commands(agg.cases.values(), due - S / 1000) == []
    (cmd,) = referrals.due_commands(agg.cases.values(), due)
    assert cmd[0] == "garda.referral.due" and cmd[2]["due_at"] == iso(due)
    early = due_command(agg, due - S)
    assert early.outcome == "stale-deadline" and early.effects.events == []
    res = due_command(agg, due)
    case = res.aggregate.cases["case-1"]
    assert res.outcome == "escalated"
    assert case.escalation_level == 1
    assert case.escalated_to == "EMB"
    esc = next(e for e in res.effects.events if e.type == "garda.case.escalated")
    assert esc.data["event"]["reason"] == "referral not accepted in time"
    assert esc.data["event"]["missed_deadline"] == iso(due)
    alert = next(e for e in res.effects.events if e.type == "garda.alert.escalated")
    assert alert.data["level"] == 1
    # exactly once: the same command again, or a later tick, changes nothing
    assert referrals.referral_due(case) is None
    again = due_command(res.aggregate, due + 10 * S, due_at=due)
    assert again.outcome == "stale-deadline" and again.effects.events == []
    assert referrals.due_commands(res.aggregate.cases.values(), due + 1000 * S) == []


def test_lapse_at_headquarters_is_recorded_without_a_level() -> None:
    agg = act(referred(level=2), "pmi.case.acknowledged", T0 + 2 * S).aggregate
    res = due_command(agg, T0 + S + WINDOW)
    case = res.aggregate.cases["case-1"]
    assert case.escalation_level == 2
    assert res.outcome == "referral-lapsed"
    assert {e.type for e in res.effects.events} >= {
        "garda.case.referral-lapsed",
        "garda.alert.referral-lapsed",
    }


def test_a_lapsed_referral_may_still_be_accepted_late() -> None:
    agg = due_command(referred(), T0 + S + WINDOW).aggregate
    res = act(agg, referrals.ACCEPTED, T0 + 2 * WINDOW)
    case = res.aggregate.cases["case-1"]
    assert case.detail["referral"]["state"] == "accepted"
    assert case.escalation_level == 1  # a level reached never falls
    ev = next(e for e in res.effects.events if e.type == "garda.case.referral-accepted")
    assert ev.data["event"]["late"] is True


def test_a_new_referral_replaces_the_pending_clock() -> None:
    agg = referred()
    agg = act(agg, "pmi.case.referred", T0 + 30 * S, to="Tenaganita").aggregate
    case = agg.cases["case-1"]
    assert referrals.pending_to(case) == "Tenaganita"
    assert referrals.referral_due(case) == T0 + 30 * S + WINDOW
    stale = due_command(agg, T0 + 30 * S + WINDOW, due_at=T0 + S + WINDOW)
    assert stale.outcome == "stale-deadline"


def test_no_clock_on_a_resolved_case_nor_after_reopening() -> None:
    agg = act(referred(), "pmi.case.resolved", T0 + 2 * S, resolution="done").aggregate
    assert referrals.referral_due(agg.cases["case-1"]) is None
    agg = act(agg, "pmi.case.reopened", T0 + 3 * S).aggregate
    assert referrals.referral_due(agg.cases["case-1"]) is None
    assert due_command(agg, T0 + 10 * WINDOW, due_at=T0 + S + WINDOW).outcome == "stale-deadline"


def test_clocks_due_commands_carry_every_clock() -> None:
    agg = referred("low")
    now = T0 + S + 3 * WINDOW
    types = sorted(c[0] for c in clocks.due_commands(agg.cases.values(), FAST, now))
    assert types == ["garda.deadline.due", "garda.referral.due"]


def test_default_policy_answer_windows() -> None:
    windows = load_policy().prevention.referrals.answer_within
    assert windows["critical"] == timedelta(hours=24)
    assert windows["medium"] == timedelta(days=7)
