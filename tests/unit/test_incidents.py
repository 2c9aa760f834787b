"""Incidents: first sight, open vs attach, duplicate incidents, updates."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from errors import NotFound, Rejected
from handlers import incidents
from handlers.cases import case_id_for, deadlines
from handlers.model import Aggregate
from tests.unit.factories import POLICY, T0, WORKER, D, H, aggregate, ctx, envelope, incident

REP = "pmi.incident.reported"
UPD = "pmi.incident.updated"
# These tests are about protection cases; coverage gaps have their own tests (test_coverage).
NO_GAPS = replace(POLICY, coverage=replace(POLICY.coverage, gap_categories=frozenset()))


def report(agg: Aggregate, data: dict, time: datetime = T0, **kw):
    c = ctx(envelope(REP, data, time=time, **kw), policy=NO_GAPS)
    incidents.incident_reported(agg, c)
    return c


def update(agg: Aggregate, data: dict, time: datetime = T0 + H):
    c = ctx(envelope(UPD, data, time=time), policy=NO_GAPS)
    incidents.incident_updated(agg, c)
    return c


def test_never_seen_worker_becomes_unregistered_abroad() -> None:
    agg = aggregate()
    c = report(agg, incident("INC-1", "lost_contact", country="sa", region="SA-02"))
    w = agg.worker
    assert (w.state, w.country, w.region) == ("unregistered_abroad", "SA", "SA-02")
    assert w.first_seen_via == REP
    assert c.outcome == "opened"
    (case,) = agg.cases.values()
    assert case.post_id == "KJRI-JEDDAH" and case.severity == "critical"


def test_known_worker_keeps_journey_location() -> None:
    agg = aggregate(exists=True, state="placed", country="MY", region="MY-01")
    report(agg, incident("INC-1", "unpaid_wages", country="SA", region=None))
    w = agg.worker
    assert (w.state, w.country, w.region) == ("placed", "MY", "MY-01")
    (case,) = agg.cases.values()
    assert (case.country, case.post_id) == ("SA", "KBRI-RIYADH")


def test_unregistered_worker_location_follows_incidents() -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "illness", country="MY", region="MY-13"))
    report(agg, incident("INC-2", "other", country="MY", region="MY-12"), T0 + D)
    assert (agg.worker.country, agg.worker.region) == ("MY", "MY-12")


def test_opens_protection_case_caused_by_incident() -> None:
    agg = aggregate()
    c = report(agg, incident("INC-1", "unpaid_wages", severity="low"))
    case = agg.cases[case_id_for(WORKER, "protection", "INC-1")]
    assert case.kind == "protection" and case.category == "unpaid_wages"
    assert case.severity == "high"  # category default beats the reported low
    assert case.incident_ids == ["INC-1"] and case.cause == "INC-1"
    assert case.detail["incident_id"] == "INC-1"
    assert case.detail["reporter_type"] == "mission"
    assert case.detail["description"] == "test report"
    assert (case.ack_due, case.resolve_due) == deadlines(POLICY, "high", T0)
    assert [t.type for t in c.effects.timeline] == ["garda.case.opened", "garda.case.assigned"]


@pytest.mark.parametrize(
    ("second_category", "delta", "attaches"),
    [
        ("unpaid_wages", 72 * H, True),
        ("unpaid_wages", 72 * H + H, False),
        ("illness", H, False),
    ],
)
def test_attach_or_open(second_category: str, delta, attaches: bool) -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "unpaid_wages"))
    c = report(agg, incident("INC-2", second_category), T0 + delta)
    assert c.outcome == ("attached" if attaches else "opened")
    assert len(agg.cases) == (1 if attaches else 2)
    if attaches:
        (case,) = agg.cases.values()
        assert case.reports == 2 and case.incident_ids == ["INC-1", "INC-2"]
        assert case.last_report_at == T0 + delta
        assert [t.type for t in c.effects.timeline] == ["garda.case.report-attached"]


def test_attach_raises_severity_never_lowers() -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "wants_to_go_home"))
    (case,) = agg.cases.values()
    assert case.severity == "medium"
    report(agg, incident("INC-2", "wants_to_go_home", severity="critical"), T0 + H)
    assert case.severity == "critical"
    assert (case.ack_due, case.resolve_due) == deadlines(POLICY, "critical", T0)
    report(agg, incident("INC-3", "wants_to_go_home", severity="low"), T0 + 2 * H)
    assert case.severity == "critical" and case.reports == 3


def test_resolved_case_is_not_attached_to() -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "accident"))
    (first,) = agg.cases.values()
    first.status = "resolved"
    c = report(agg, incident("INC-2", "accident"), T0 + H)
    assert c.outcome == "opened" and len(agg.cases) == 2


@pytest.mark.parametrize("later", [H, 10 * D])
def test_same_incident_under_new_event_id_is_duplicate(later) -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "accident"), id="a")
    report(agg, incident("INC-2", "accident"), T0 + H, id="b")  # attached
    snapshot = {k: v.to_doc() for k, v in agg.cases.items()}
    for inc in ("INC-1", "INC-2"):
        c = report(agg, incident(inc, "accident", severity="critical"), T0 + later, id=f"re-{inc}")
        assert c.outcome == "duplicate-incident"
        assert c.effects.timeline == [] and c.effects.events == []
    assert {k: v.to_doc() for k, v in agg.cases.items()} == snapshot


def test_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    after: list[tuple[str, str]] = []
    monkeypatch.setattr(incidents, "ON_FIRST_SEEN", [lambda a, c: seen.append(a.worker.state)])
    monkeypatch.setattr(
        incidents, "AFTER_INCIDENT", [lambda a, c, case: after.append((c.outcome, case.case_id))]
    )
    agg = aggregate()
    report(agg, incident("INC-1", "death"))
    report(agg, incident("INC-2", "death"), T0 + H)
    report(agg, incident("INC-2", "death"), T0 + H)  # duplicate: no hooks
    cid = case_id_for(WORKER, "protection", "INC-1")
    assert seen == ["unregistered_abroad"]
    assert after == [("opened", cid), ("attached", cid)]


# --- updates ----------------------------------------------------------------------------


def test_update_unknown_incident_is_404() -> None:
    agg = aggregate()
    report(agg, incident("INC-1"))
    with pytest.raises(Rejected) as exc:
        update(agg, {"incident_id": "INC-404", "note": "x"})
    assert isinstance(exc.value, NotFound) and "INC-404" in exc.value.reason


def test_update_note_goes_to_timeline_only() -> None:
    agg = aggregate()
    report(agg, incident("INC-1"))
    c = update(agg, {"incident_id": "INC-1", "note": "employer reached by phone"})
    (entry,) = c.effects.timeline
    assert entry.type == UPD and entry.detail["note"] == "employer reached by phone"
    assert entry.actor == "test/source"
    assert c.effects.events == []  # no garda.case.* type exists for it
    assert c.outcome == "updated"


@pytest.mark.parametrize(
    ("start", "new", "expected"),
    [("low", "critical", "critical"), ("high", "low", "high"), ("high", "high", "high")],
)
def test_update_severity_rises_never_falls(start: str, new: str, expected: str) -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "other", severity=start))
    (case,) = agg.cases.values()
    c = update(agg, {"incident_id": "INC-1", "severity": new})
    assert case.severity == expected
    assert (case.ack_due, case.resolve_due) == deadlines(POLICY, expected, T0)
    assert ("severity_from" in c.effects.timeline[0].detail) is (expected != start)


def test_update_category_changes_case_and_raises_to_its_default() -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "wants_to_go_home"))
    (case,) = agg.cases.values()
    c = update(agg, {"incident_id": "INC-1", "category": "trafficking"})
    assert case.category == "trafficking" and case.severity == "critical"
    d = c.effects.timeline[0].detail
    assert d["category_from"] == "wants_to_go_home" and d["severity_from"] == "medium"
    # later reports of the new category attach; the old category opens a new case
    assert report(agg, incident("INC-2", "trafficking"), T0 + 2 * H).outcome == "attached"
    assert report(agg, incident("INC-3", "wants_to_go_home"), T0 + 2 * H).outcome == "opened"


def test_update_category_to_lower_default_keeps_severity() -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "detention"))
    (case,) = agg.cases.values()
    update(agg, {"incident_id": "INC-1", "category": "overstay"})
    assert case.category == "overstay" and case.severity == "critical"


def test_update_finds_attached_incident() -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "illness"))
    report(agg, incident("INC-2", "illness"), T0 + H)
    (case,) = agg.cases.values()
    update(agg, {"incident_id": "INC-2", "severity": "critical"})
    assert case.severity == "critical"


def test_update_that_changes_the_case_is_published_as_garda_case_updated() -> None:
    agg = aggregate()
    report(agg, incident("INC-1", "illness"))
    c = update(agg, {"incident_id": "INC-1", "severity": "critical"})
    (event,) = [e for e in c.effects.events if e.type.startswith("garda.case.")]
    assert event.type == "garda.case.updated"
    assert event.data["severity"] == "critical"
    assert event.data["event"]["severity_from"] == "high"
    c = update(agg, {"incident_id": "INC-1", "note": "called the employer"})
    assert not [e for e in c.effects.events if e.type.startswith("garda.case.")]
    assert [t.type for t in c.effects.timeline] == ["pmi.incident.updated"]
