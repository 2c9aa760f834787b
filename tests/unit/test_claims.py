"""BPJS claims: lifecycle, out-of-order changes, disputes, stalls, idempotency (design §5)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from errors import Rejected
from handlers.claims import (
    CLAIM_HANDLERS,
    STATUSES,
    TERMINAL,
    handle_claim_filed,
    handle_claim_stall,
    handle_claim_status,
    stall_due,
    stalled_claims,
)
from handlers.context import Ctx
from handlers.model import Aggregate, Case, Claim, Worker
from handlers.policy import ClaimsPolicy, load_policy
from schemas import topics
from schemas.envelope import Envelope
from schemas.fields import iso

POLICY = dataclasses.replace(load_policy(), claims=ClaimsPolicy(stall=timedelta(days=14)))
STALL = timedelta(days=14)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


T0 = utc(2027, 3, 1, 9)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def run(
    handler, agg: Aggregate, type_: str, data: dict[str, Any], *, id_: str, now: datetime
) -> Ctx:
    env = Envelope(
        id=id_,
        source="bpjstk/claims",
        type=type_,
        subject=agg.worker.worker_id,
        data={"worker_id": agg.worker.worker_id, **data},
        time=now,
    )
    ctx = Ctx(envelope=env, policy=POLICY, now=now)
    handler(agg, ctx)
    return ctx


def file(agg: Aggregate, claim_id: str = "CLM-1", when: datetime = T0, **extra: Any) -> Ctx:
    data = {
        "claim_id": claim_id,
        "program": "JKK",
        "benefit": "treatment",
        "event_date": "2027-02-20",
        "filed_at": iso(when),
        **extra,
    }
    return run(handle_claim_filed, agg, "pmi.claim.filed", data, id_=f"f-{claim_id}", now=when)


def status(
    agg: Aggregate,
    st: str,
    when: datetime,
    claim_id: str = "CLM-1",
    *,
    now: datetime | None = None,
    id_: str | None = None,
    **extra: Any,
) -> Ctx:
    data = {"claim_id": claim_id, "status": st, "changed_at": iso(when), **extra}
    return run(
        handle_claim_status,
        agg,
        "pmi.claim.status-changed",
        data,
        id_=id_ or f"s-{claim_id}-{st}-{iso(when)}",
        now=now or max(when, T0),
    )


def stall(agg: Aggregate, now: datetime, claim_id: str = "CLM-1", id_: str = "stall-1") -> Ctx:
    claim = agg.claims.get(claim_id)
    data = {
        "claim_id": claim_id,
        "last_change_at": iso(claim.last_change_at) if claim and claim.last_change_at else None,
    }
    return run(handle_claim_stall, agg, "garda.claim.stalled", data, id_=id_, now=now)


def placed(*cases: Case) -> Aggregate:
    w = Worker(worker_id="PMI-7", state="placed", country="MY", region="MY-01")
    return Aggregate(worker=w, cases={c.case_id: c for c in cases}, exists=True)


def protection(status_: str = "open", incident_id: str = "INC-1") -> Case:
    return Case(
        case_id="CASE-P1",
        worker_id="PMI-7",
        kind="protection",
        category="accident",
        severity="high",
        post_id="KJRI-JOHOR-BAHRU",
        opened_at=utc(2027, 2, 20),
        status=status_,
        country="MY",
        region="MY-01",
        incident_ids=[incident_id],
    )


def disputes(a: Aggregate) -> list[Case]:
    return [c for c in a.cases.values() if c.kind == "claim_dispute"]


def case_events(ctx: Ctx) -> list[str]:
    return [e.type for e in ctx.effects.events if e.topic == topics.CASES]


HAPPY = ["docs_pending", "submitted", "verified", "approved", "paid"]


# --- lifecycle --------------------------------------------------------------------------------


def test_handlers_table():
    assert set(CLAIM_HANDLERS) == {
        "pmi.claim.filed",
        "pmi.claim.status-changed",
        "garda.claim.stalled",
    }
    assert TERMINAL == {"paid", "rejected", "expired"}


def test_full_happy_path_linked_to_the_incident_case():
    a = placed(protection())
    ctxs = [file(a, incident_id="INC-1", amount_idr=50_000_000)]
    for i, st in enumerate(HAPPY, start=1):
        extra = {"amount_paid_idr": 48_000_000} if st == "paid" else {}
        ctxs.append(status(a, st, at(i), **extra))
    claim = a.claims["CLM-1"]
    assert claim.status == "paid"
    assert claim.program == "JKK"
    assert claim.worker_id == "PMI-7"
    assert claim.case_id == "CASE-P1"
    assert claim.filed_at == T0 and claim.last_change_at == at(5)
    assert claim.amount_idr == 50_000_000 and claim.amount_paid_idr == 48_000_000
    assert [h["status"] for h in claim.history] == ["filed", *HAPPY]
    assert not claim.out_of_order
    assert not any(h["out_of_order"] for h in claim.history)
    assert [c.outcome for c in ctxs] == ["claim_filed"] + ["claim_status"] * 5
    # one timeline row per claim event on the incident's case, and no case event published
    rows = [r for c in ctxs for r in c.effects.timeline]
    assert [r.type for r in rows] == ["garda.claim.filed"] + ["garda.claim.status-changed"] * 5
    assert {r.case_id for r in rows} == {"CASE-P1"}
    assert all(c.effects.events == [] for c in ctxs)
    assert disputes(a) == []
    assert a.worker.state == "placed"  # a known worker keeps its state
    assert stalled_claims(a, POLICY, at(400)) == []  # paid is terminal


def test_docs_pending_may_be_skipped_and_reentered():
    a = placed()
    file(a)
    for i, st in enumerate(["submitted", "docs_pending", "submitted", "verified"], start=1):
        status(a, st, at(i))
    claim = a.claims["CLM-1"]
    assert claim.status == "verified" and not claim.out_of_order


def test_claim_without_incident_is_unlinked_and_has_no_timeline():
    a = placed(protection())
    ctx = file(a)
    assert a.claims["CLM-1"].case_id is None
    assert ctx.effects.timeline == []


def test_worker_first_seen_through_a_claim_is_unregistered_abroad():
    a = Aggregate(worker=Worker(worker_id="PMI-9"))
    file(a)
    assert a.worker.state == "unregistered_abroad"
    assert a.worker.first_seen_via == "pmi.claim.filed"
    assert a.worker.non_procedural is False
    b = Aggregate(worker=Worker(worker_id="PMI-9"))
    status(b, "submitted", at(1))
    assert b.worker.state == "unregistered_abroad"
    assert b.worker.first_seen_via == "pmi.claim.status-changed"


def test_link_retried_when_the_incident_case_arrives_later():
    a = placed()
    file(a, incident_id="INC-1")
    assert a.claims["CLM-1"].case_id is None
    a.cases["CASE-P1"] = protection()
    ctx = status(a, "submitted", at(1))
    assert a.claims["CLM-1"].case_id == "CASE-P1"
    assert [r.case_id for r in ctx.effects.timeline] == ["CASE-P1"]


# --- out of order ------------------------------------------------------------------------------


def test_paid_before_approved():
    a = placed()
    file(a)
    status(a, "submitted", at(1))
    status(a, "verified", at(2))
    status(a, "paid", at(4))  # skips approved: flagged, but the latest change
    claim = a.claims["CLM-1"]
    assert claim.status == "paid" and claim.out_of_order
    assert claim.history[-1]["out_of_order"] is True
    status(a, "approved", at(3))  # arrives late, older than the last change
    assert claim.status == "paid"
    assert claim.last_change_at == at(4)
    assert [h["status"] for h in claim.history] == [
        "filed",
        "submitted",
        "verified",
        "paid",
        "approved",
    ]
    assert [h["out_of_order"] for h in claim.history] == [False, False, False, True, True]


def test_older_status_is_kept_but_does_not_become_current():
    a = placed()
    file(a)
    status(a, "verified", at(5))
    status(a, "submitted", at(3))  # older by changed_at
    claim = a.claims["CLM-1"]
    assert claim.status == "verified" and claim.last_change_at == at(5)
    assert claim.history[-1] == claim.history[-1] | {"status": "submitted", "out_of_order": True}
    assert claim.out_of_order


def test_latest_changed_at_wins_even_after_a_terminal_status():
    a = placed()
    file(a)
    status(a, "rejected", at(2), reason="documents incomplete")
    status(a, "submitted", at(6))  # resubmission after rejection: kept, flagged, current
    claim = a.claims["CLM-1"]
    assert claim.status == "submitted" and claim.out_of_order
    assert claim.history[-1]["out_of_order"] is True


def test_status_for_unknown_claim_is_kept_then_completed_by_the_filing():
    a = placed()
    ctx = status(a, "submitted", at(2))
    claim = a.claims["CLM-1"]
    assert ctx.outcome == "claim_status"
    assert claim.program is None
    assert claim.status == "submitted" and claim.out_of_order
    assert claim.history[0]["out_of_order"] is True
    file(a)  # filed at T0 < at(2): kept, flagged, not current
    assert claim.program == "JKK"
    assert claim.status == "submitted" and claim.last_change_at == at(2)
    assert claim.filed_at == T0
    assert [h["status"] for h in claim.history] == ["submitted", "filed"]
    assert [h["out_of_order"] for h in claim.history] == [True, True]


def test_unknown_status_is_rejected():
    a = placed()
    file(a)
    with pytest.raises(Rejected):
        status(a, "lost", at(1))
    with pytest.raises(Rejected):
        status(a, "filed", at(1))
    assert [h["status"] for h in a.claims["CLM-1"].history] == ["filed"]


# --- idempotency ----------------------------------------------------------------------------------


def test_replay_of_the_same_data_changes_nothing():
    a = placed(protection())
    file(a, incident_id="INC-1")
    replay = file(a, incident_id="INC-1")
    assert replay.outcome == "duplicate"
    assert replay.effects.timeline == [] and replay.effects.events == []
    status(a, "rejected", at(1), reason="late")
    before = dataclasses.replace(a.claims["CLM-1"], history=list(a.claims["CLM-1"].history))
    dispute_ids = [c.case_id for c in disputes(a)]
    again = status(a, "rejected", at(1), reason="late", id_="resent-with-new-id")
    assert again.outcome == "duplicate"
    assert again.effects.events == [] and again.effects.timeline == []
    assert a.claims["CLM-1"] == before
    assert [c.case_id for c in disputes(a)] == dispute_ids and len(dispute_ids) == 1


def test_dispute_case_id_is_deterministic():
    ids = []
    for _ in range(2):
        a = placed(protection())
        file(a)
        status(a, "rejected", at(1))
        ids.append([c.case_id for c in disputes(a)])
    assert ids[0] == ids[1] and len(ids[0]) == 1


# --- rejected -----------------------------------------------------------------------------------------


def test_rejected_with_open_protection_case_opens_claim_dispute():
    a = placed(protection())
    file(a, incident_id="INC-1")
    ctx = status(a, "rejected", at(3), reason="not a work accident")
    [d] = disputes(a)
    assert ctx.outcome == "dispute_opened"
    assert d.category is None and d.severity == "high"
    assert d.cause == "CLM-1" and d.claim_id == "CLM-1"
    assert (d.country, d.region, d.post_id) == ("MY", "MY-01", "KJRI-JOHOR-BAHRU")
    assert d.public()["detail"] == {  # as published; the claim is a typed field
        "claim_id": "CLM-1",
        "program": "JKK",
        "reason": "not a work accident",
        "trigger": "rejected",
    }
    assert case_events(ctx) == ["garda.case.opened", "garda.case.assigned"]
    # the status change is on the timeline of the incident's case and of the dispute
    rows = [r for r in ctx.effects.timeline if r.type == "garda.claim.status-changed"]
    assert {r.case_id for r in rows} == {"CASE-P1", d.case_id}


@pytest.mark.parametrize("case_status", ["open", "acknowledged", "reopened"])
def test_rejected_with_any_open_status_disputes(case_status):
    a = placed(protection(status_=case_status))
    file(a)  # not even linked to the incident: any open protection case counts
    status(a, "rejected", at(1))
    assert len(disputes(a)) == 1


@pytest.mark.parametrize("cases", [(), (protection(status_="resolved"),)])
def test_rejected_without_open_protection_case_opens_nothing(cases):
    a = placed(*cases)
    file(a)
    ctx = status(a, "rejected", at(1))
    assert disputes(a) == [] and ctx.outcome == "claim_status"
    assert a.claims["CLM-1"].status == "rejected"


def test_open_non_protection_case_does_not_count():
    other = dataclasses.replace(protection(), case_id="CASE-G", kind="coverage_gap", category=None)
    a = placed(other)
    file(a)
    status(a, "rejected", at(1))
    assert disputes(a) == []


def test_stale_rejection_does_not_dispute():
    a = placed(protection())
    file(a)
    status(a, "approved", at(5))
    status(a, "rejected", at(2))  # older than approved: history only
    assert a.claims["CLM-1"].status == "approved"
    assert disputes(a) == []


def test_unregistered_worker_dispute_routes_like_its_protection_case():
    w = Worker(worker_id="PMI-7", state="unregistered_abroad")  # no country known
    p = dataclasses.replace(protection(), country="SA", region="SA-02", post_id="KJRI-JEDDAH")
    a = Aggregate(worker=w, cases={p.case_id: p})
    file(a, incident_id="INC-1")
    status(a, "rejected", at(1))
    [d] = disputes(a)
    assert (d.country, d.region, d.post_id) == ("SA", "SA-02", "KJRI-JEDDAH")


# --- stall -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "stalled"),
    [
        (at(1) + STALL - timedelta(microseconds=1), False),
        (at(1) + STALL - timedelta(seconds=1), False),
        (at(1) + STALL, True),  # exactly 14 days
        (at(1) + STALL + timedelta(days=3), True),
    ],
)
def test_stall_threshold(now, stalled):
    a = placed()
    file(a)
    status(a, "submitted", at(1))
    assert stall_due(a.claims["CLM-1"], POLICY) == at(1) + STALL
    assert stalled_claims(a, POLICY, now) == (["CLM-1"] if stalled else [])
    ctx = stall(a, now)
    assert len(disputes(a)) == (1 if stalled else 0)
    assert ctx.outcome == ("dispute_opened" if stalled else "ignored")


def test_filed_only_claim_stalls_from_filed_at():
    a = placed()
    file(a)
    assert stalled_claims(a, POLICY, T0 + STALL) == ["CLM-1"]


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_claims_never_stall(terminal):
    a = placed()
    file(a)
    status(a, terminal, at(1))
    assert stall_due(a.claims["CLM-1"], POLICY) is None
    assert stalled_claims(a, POLICY, at(500)) == []
    stall(a, at(500))
    assert disputes(a) == []


def test_stalled_claims_lists_only_stale_ones_sorted():
    a = placed()
    file(a, "CLM-B")
    file(a, "CLM-A")
    file(a, "CLM-C")
    status(a, "submitted", at(10), "CLM-C")
    assert stalled_claims(a, POLICY, T0 + STALL) == ["CLM-A", "CLM-B"]


def test_stall_opens_dispute_with_detail():
    a = placed()
    file(a)
    status(a, "submitted", at(1))
    ctx = stall(a, at(1) + STALL)
    [d] = disputes(a)
    assert d.cause == "CLM-1" and d.severity == "high" and d.category is None
    assert d.public()["detail"] == {  # as published; the claim is a typed field
        "claim_id": "CLM-1",
        "program": "JKK",
        "reason": f"no status change since {iso(at(1))}",
        "trigger": "stalled",
    }
    assert d.post_id == "KJRI-JOHOR-BAHRU"
    assert case_events(ctx) == ["garda.case.opened", "garda.case.assigned"]


def test_stall_command_is_rechecked_against_now():
    a = placed()
    file(a)
    status(a, "submitted", at(1))
    # the timer was set for at(1) + 14 d, but a change came in meanwhile
    status(a, "verified", at(10))
    ctx = stall(a, at(1) + STALL)
    assert ctx.outcome == "ignored" and disputes(a) == []


def test_stall_for_unknown_claim_is_ignored():
    a = placed()
    ctx = stall(a, at(30), claim_id="CLM-X")
    assert ctx.outcome == "ignored" and ctx.effects.events == []


def test_stall_replay_opens_nothing_twice():
    a = placed()
    file(a)
    stall(a, T0 + STALL)
    replay = stall(a, T0 + STALL + timedelta(hours=1), id_="stall-2")
    assert len(disputes(a)) == 1
    assert replay.outcome == "ignored" and replay.effects.events == []


def test_stalled_then_rejected_opens_one_dispute():
    a = placed(protection())
    file(a, incident_id="INC-1")
    stall(a, T0 + STALL)
    [d] = disputes(a)
    ctx = status(a, "rejected", T0 + STALL + timedelta(days=1), reason="expired documents")
    assert disputes(a) == [d]
    assert d.detail["trigger"] == "stalled"  # the first cause stays on the case
    assert case_events(ctx) == []
    # the rejection is on the dispute's timeline
    assert d.case_id in {r.case_id for r in ctx.effects.timeline}


def test_rejected_then_stall_opens_nothing():
    a = placed(protection())
    file(a)
    status(a, "rejected", at(1))
    stall(a, at(100))
    assert len(disputes(a)) == 1


def test_statuses_constant_matches_design():
    assert STATUSES == (
        "filed",
        "docs_pending",
        "submitted",
        "verified",
        "approved",
        "paid",
        "rejected",
        "expired",
    )
    assert isinstance(Claim(claim_id="c", worker_id="w", program="JKM").history, list)


def test_a_handled_stall_is_not_due_again_until_the_claim_moves() -> None:
    from datetime import UTC, datetime, timedelta

    from handlers.claims import stall_due
    from handlers.model import Claim
    from handlers.policy import load_policy

    policy = load_policy()
    last = datetime(2026, 11, 1, tzinfo=UTC)
    claim = Claim(
        claim_id="C1", worker_id="W1", program="JKM", status="submitted", last_change_at=last
    )
    assert stall_due(claim, policy) == last + policy.claims.stall
    claim.stall_handled_for = last
    assert stall_due(claim, policy) is None
    claim.last_change_at = last + timedelta(days=1)  # a new status change restarts the clock
    assert stall_due(claim, policy) == claim.last_change_at + policy.claims.stall
