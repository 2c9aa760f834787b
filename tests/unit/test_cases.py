"""Cases: severity rule, deadlines, deterministic ids, dedup window, attaching reports."""

from __future__ import annotations

from datetime import timedelta

import pytest

from errors import Unacceptable
from handlers.cases import (
    attach_report,
    case_id_for,
    deadlines,
    find_attachable_case,
    open_case,
    raise_severity,
    severity_for,
)
from handlers.model import SEVERITIES, Case, max_severity
from handlers.policy import CATEGORIES
from tests.unit.factories import POLICY, T0, WORKER, D, H, aggregate, ctx, envelope

CRITICAL = {
    "death",
    "trafficking",
    "sexual_violence",
    "employer_violence",
    "detention",
    "lost_contact",
}
HIGH = {"accident", "illness", "mental_health", "unpaid_wages", "document_withheld", "job_fraud",
        "deportation"}  # fmt: skip
LOW = {"other"}


def default_of(category: str) -> str:
    if category in CRITICAL:
        return "critical"
    if category in HIGH:
        return "high"
    if category in LOW:
        return "low"
    return "medium"


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("reported", [None, *SEVERITIES])
def test_severity_for_every_category(category: str, reported: str | None) -> None:
    default = default_of(category)
    expected = default if reported is None else max_severity(default, reported)
    assert severity_for(POLICY, category, reported) == expected


def test_severity_for_without_category_default() -> None:
    assert severity_for(POLICY, None, None) == "medium"
    assert severity_for(POLICY, None, "low") == "low"
    assert severity_for(POLICY, "no_such", "critical") == "critical"
    with pytest.raises(Unacceptable, match="unknown severity"):
        severity_for(POLICY, "other", "urgent")


@pytest.mark.parametrize(
    ("severity", "ack", "resolve"),
    [("critical", H, 3 * D), ("high", 24 * H, 14 * D), ("medium", 72 * H, 30 * D),
     ("low", 7 * D, 60 * D)],
)  # fmt: skip
def test_deadlines(severity: str, ack: timedelta, resolve: timedelta) -> None:
    assert deadlines(POLICY, severity, T0) == (T0 + ack, T0 + resolve)


def _open(agg, c, *, cause="INC-1", category="unpaid_wages", severity="high", **kw):
    return open_case(
        agg, c, kind=kw.pop("kind", "protection"), category=category, severity=severity,
        cause=cause, country=kw.pop("country", "MY"), region=kw.pop("region", "MY-01"), **kw,
    )  # fmt: skip


def test_open_case_routes_sets_deadlines_and_records_steps() -> None:
    agg, c = aggregate(), ctx()
    case = _open(agg, c, detail={"incident_id": "INC-1"})
    assert case.case_id == case_id_for(WORKER, "protection", "INC-1")
    assert case.case_id.startswith("CASE-")
    assert agg.cases == {case.case_id: case}
    assert case.post_id == "KJRI-JOHOR-BAHRU"
    assert "KJRI Johor Bahru" in (case.routing_note or "")
    assert case.opened_at == c.event_time == T0
    assert (case.ack_due, case.resolve_due) == (T0 + 24 * H, T0 + 14 * D)
    assert case.last_report_at == T0 and case.reports == 1 and case.status == "open"
    assert case.cause == "INC-1" and case.detail == {"incident_id": "INC-1"}
    assert [t.type for t in c.effects.timeline] == ["garda.case.opened", "garda.case.assigned"]
    assert [e.type for e in c.effects.events] == ["garda.case.opened", "garda.case.assigned"]
    opened, assigned = c.effects.timeline
    assert opened.detail["cause"] == "INC-1"
    assert opened.detail["routing_note"] == case.routing_note
    assert opened.detail["incident_id"] == "INC-1"
    assert assigned.detail["post_id"] == "KJRI-JOHOR-BAHRU"
    assert c.effects.events[0].data["case_id"] == case.case_id


def test_open_case_headquarters_note() -> None:
    agg, c = aggregate(), ctx()
    case = _open(agg, c, country="FR", region=None)
    assert case.post_id == "HQ"
    assert "no Indonesian labour post covers FR" in (case.routing_note or "")
    assert c.effects.timeline[1].detail["post_id"] == "HQ"


def test_open_case_at_overrides_event_time() -> None:
    agg, c = aggregate(), ctx()
    case = _open(agg, c, at=T0 - D)
    assert case.opened_at == T0 - D and case.ack_due == T0 - D + 24 * H


def test_open_case_is_replay_safe() -> None:
    agg = aggregate()
    first = _open(agg, ctx())
    first.status = "resolved"
    c2 = ctx(envelope("pmi.incident.reported", time=T0 + D))
    again = _open(agg, c2, severity="critical")
    assert again is first and again.status == "resolved" and again.severity == "high"
    assert c2.effects.timeline == [] and c2.effects.events == []


def test_case_ids_deterministic_and_distinct() -> None:
    a = case_id_for(WORKER, "protection", "INC-1")
    assert a == case_id_for(WORKER, "protection", "INC-1")
    others = {
        case_id_for(WORKER, "protection", "INC-2"),
        case_id_for(WORKER, "coverage_gap", "INC-1"),
        case_id_for("PMI-OTHER", "protection", "INC-1"),
    }
    assert a not in others and len(others) == 3
    # the same cause in two independent runs gives the same case
    assert _open(aggregate(), ctx()).case_id == _open(aggregate(), ctx()).case_id


WINDOW = [
    (timedelta(0), True),
    (H, True),
    (72 * H - timedelta(microseconds=1), True),
    (72 * H, True),  # exactly at the window: still attaches
    (72 * H + timedelta(microseconds=1), False),
    (72 * H + timedelta(seconds=1), False),
    (4 * D, False),
    (-72 * H, True),  # a late report of an earlier incident
    (-72 * H - timedelta(seconds=1), False),
]


@pytest.mark.parametrize(("delta", "attaches"), WINDOW)
def test_dedup_window_boundary(delta: timedelta, attaches: bool) -> None:
    agg = aggregate()
    case = _open(agg, ctx())
    found = find_attachable_case(agg, "unpaid_wages", T0 + delta, POLICY)
    assert (found is case) is attaches


def test_dedup_window_counts_from_last_report() -> None:
    agg = aggregate()
    case = _open(agg, ctx())
    attach_report(agg, ctx(envelope("x", time=T0 + 60 * H)), case, "high", "INC-2")
    assert case.last_report_at == T0 + 60 * H
    assert find_attachable_case(agg, "unpaid_wages", T0 + 132 * H, POLICY) is case
    assert find_attachable_case(agg, "unpaid_wages", T0 + 133 * H, POLICY) is None


@pytest.mark.parametrize(
    ("change", "attaches"),
    [
        ({}, True),
        ({"status": "acknowledged"}, True),
        ({"status": "reopened"}, True),
        ({"status": "resolved"}, False),
        ({"category": "illness"}, False),
        ({"kind": "coverage_gap"}, False),
    ],
)
def test_attachable_only_open_protection_same_category(change: dict, attaches: bool) -> None:
    agg = aggregate()
    case = _open(agg, ctx())
    for k, v in change.items():
        setattr(case, k, v)
    assert (find_attachable_case(agg, "unpaid_wages", T0 + H, POLICY) is case) is attaches


def test_attachable_prefers_latest_report() -> None:
    agg = aggregate()
    old = _open(agg, ctx(envelope("x", time=T0)), cause="A")
    new = _open(agg, ctx(envelope("x", time=T0 + 10 * H)), cause="B")
    assert old.case_id != new.case_id
    assert find_attachable_case(agg, "unpaid_wages", T0 + 11 * H, POLICY) is new


@pytest.mark.parametrize(
    ("opened", "reported", "expected"),
    [(a, b, max_severity(a, b)) for a in SEVERITIES for b in SEVERITIES],
)
def test_attach_severity_never_falls(opened: str, reported: str, expected: str) -> None:
    agg = aggregate()
    case = _open(agg, ctx(), category="other", severity=opened)
    c = ctx(envelope("pmi.incident.reported", time=T0 + H))
    attach_report(agg, c, case, reported, "INC-2")
    assert case.severity == expected
    assert case.reports == 2 and case.incident_ids == ["INC-2"]
    assert (case.ack_due, case.resolve_due) == deadlines(POLICY, expected, T0)
    (entry,) = c.effects.timeline
    assert entry.type == "garda.case.report-attached"
    assert entry.detail["reports"] == 2 and entry.detail["incident_id"] == "INC-2"
    assert ("severity_from" in entry.detail) is (expected != opened)
    assert c.effects.events[0].type == "garda.case.report-attached"


def test_severity_rise_uses_reopen_clock() -> None:
    agg = aggregate()
    case = _open(agg, ctx(), severity="medium")
    case.clock_started_at = T0.replace(day=5, month=12, hour=0)
    assert raise_severity(ctx(), case, "critical")
    start = T0.replace(day=5, month=12, hour=0)
    assert case.ack_due == start + H and case.resolve_due == start + 3 * D
    assert not raise_severity(ctx(), case, "high")
    assert not raise_severity(ctx(), case, None)


def test_a_case_document_of_the_old_layout_reads_into_the_typed_fields() -> None:
    """Escalation and claim facts were ``detail`` keys; a document still in that layout (not
    migrated yet) reads into the typed fields, and the published detail is what it was."""
    old_detail = {
        "escalated_to": "KBRI-KUALA-LUMPUR",
        "resolve_deadline_missed": "2026-12-01T00:00:00Z",
        "clock_started_at": "2026-11-30T00:00:00Z",
        "jkm": {"claim_id": "JKM-1", "due": "2026-12-30T00:00:00Z", "reminded_at": None},
        "claim_suggested": {"program": "JKM", "at": "2026-11-29T02:00:00Z"},
        "reasons": ["no_worker_card"],
    }
    doc = _open(aggregate(), ctx()).to_doc()
    doc["detail"] = old_detail
    case = Case.from_doc(doc)
    assert case.escalated_to == "KBRI-KUALA-LUMPUR"
    assert case.resolve_deadline_missed == T0.replace(month=12, day=1, hour=0)
    assert case.clock_started_at == T0.replace(day=30, hour=0)
    assert (case.claim_id, case.jkm_due, case.jkm_reminded_at) == (
        "JKM-1",
        T0.replace(month=12, day=30, hour=0),
        None,
    )
    assert (case.claim_suggested, case.claim_suggested_at) == ("JKM", T0)
    assert case.detail == {"reasons": ["no_worker_card"]}
    assert case.public()["detail"] == old_detail
    assert Case.from_doc(case.to_doc()) == case
    assert doc["detail"] is old_detail and "jkm" in old_detail  # the input is not changed
