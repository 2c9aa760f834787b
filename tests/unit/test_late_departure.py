"""A departure applied after an incident about the same worker (cross-topic order): the
departure corrects the worker's state, drops the suspicion and closes the coverage gap the
incident opened in error (resolved with a timeline step, never deleted)."""

from __future__ import annotations

from handlers.dispatch import handle
from handlers.model import Aggregate
from tests.unit.factories import POLICY, T0, D, H, aggregate, departure, envelope, incident


def run(agg: Aggregate, *events):
    effects = []
    for env in events:
        result = handle(agg, env, POLICY, (env.time or T0) + H)
        agg = result.aggregate
        effects.append(result.effects)
    return agg, effects


def gaps(agg: Aggregate):
    return [c for c in agg.cases.values() if c.kind == "coverage_gap"]


def accident_then_departure(**dep: object):
    inc = envelope("pmi.incident.reported", incident("INC-9", "accident"), time=T0 + H)
    dep_env = envelope("pmi.departure.recorded", departure(T0 - 30 * D, **dep), time=T0)
    return run(aggregate(), inc, dep_env)


def test_incident_first_opens_a_gap_and_flags_the_worker() -> None:
    inc = envelope("pmi.incident.reported", incident("INC-9", "accident"), time=T0 + H)
    agg, _ = run(aggregate(), inc)
    assert agg.worker.state == "unregistered_abroad"
    assert agg.worker.non_procedural_reasons == ["suspected_unregistered"]
    [gap] = gaps(agg)
    assert gap.status == "open" and gap.detail["reason"] == "no_membership"


def test_late_departure_with_membership_closes_the_gap() -> None:
    agg, effects = accident_then_departure()
    assert agg.worker.state == "departed"
    assert "suspected_unregistered" not in agg.worker.non_procedural_reasons
    [gap] = gaps(agg)
    assert gap.status == "resolved"
    assert gap.detail["resolution"] == "covered"
    assert gap.resolved_at >= gap.opened_at
    [step] = [t for t in effects[1].timeline if t.case_id == gap.case_id]
    assert step.type == "garda.case.resolved" and step.actor == "garda"
    assert step.detail["reason"] == "disproved"
    assert step.detail["by"] == "pmi.departure.recorded"
    published = [e for e in effects[1].events if e.data.get("case_id") == gap.case_id]
    assert [e.type for e in published] == ["garda.case.resolved"]
    # The protection case itself is untouched by the correction.
    [protection] = [c for c in agg.cases.values() if c.kind == "protection"]
    assert protection.status == "open"
    assert gap.case_id not in agg.worker_public()["open_cases"]


def test_late_departure_without_membership_keeps_the_gap_open() -> None:
    agg, _ = accident_then_departure(bpjs_membership_no=None)
    [gap] = gaps(agg)
    assert gap.status == "open"


def test_departure_whose_window_misses_the_incident_keeps_the_gap_open() -> None:
    inc = envelope("pmi.incident.reported", incident("INC-9", "accident"), time=T0 + H)
    # Departure a year after the incident: coverage starts 5 months before it, too late.
    late = envelope("pmi.departure.recorded", departure(T0 + 365 * D), time=T0 + 2 * H)
    agg, _ = run(aggregate(), inc, late)
    [gap] = gaps(agg)
    assert gap.status == "open"


def test_a_replayed_departure_changes_nothing_more() -> None:
    inc = envelope("pmi.incident.reported", incident("INC-9", "accident"), time=T0 + H)
    dep = envelope("pmi.departure.recorded", departure(T0 - 30 * D), time=T0)
    agg, effects = run(aggregate(), inc, dep, dep)
    [gap] = gaps(agg)
    assert gap.status == "resolved"
    assert [t for t in effects[2].timeline if t.case_id == gap.case_id] == []


def test_a_claim_filed_before_its_incident_is_linked_when_the_case_opens() -> None:
    claim = {
        "claim_id": "JKK-9",
        "program": "JKK",
        "event_date": "2026-11-28",
        "filed_at": "2026-11-29T02:00:00Z",
        "incident_id": "INC-9",
    }
    filed = envelope("pmi.claim.filed", claim, time=T0)
    inc = envelope("pmi.incident.reported", incident("INC-9", "accident"), time=T0 + H)
    agg, _ = run(aggregate(), filed, inc)
    [protection] = [c for c in agg.cases.values() if c.kind == "protection"]
    assert agg.claims["JKK-9"].case_id == protection.case_id
