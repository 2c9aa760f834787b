"""Coverage window, its boundaries, coverage_gap cases and claim_suggested (design §5)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from handlers.context import Ctx
from handlers.coverage import (
    check_incident_coverage,
    coverage_window,
    is_covered,
    suggested_program,
    update_coverage,
)
from handlers.model import Aggregate, Case, Worker
from handlers.policy import Coverage, load_policy
from schemas import topics
from schemas.envelope import Envelope

GAP = ("accident", "death", "employer_violence", "sexual_violence", "illness")
POLICY = dataclasses.replace(
    load_policy(),
    coverage=Coverage(
        pre_placement=timedelta(days=150),
        post_placement=timedelta(days=30),
        default_contract=timedelta(days=730),
        gap_categories=frozenset(GAP),
    ),
)
NOW = datetime(2030, 1, 1, tzinfo=UTC)
PLUS7 = timezone(timedelta(hours=7))
MINUS5 = timezone(timedelta(hours=-5))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


DEPARTED = utc(2026, 1, 10, 3, 0)
CONTRACT_END = utc(2027, 12, 31)
START = utc(2025, 8, 13, 3, 0)  # DEPARTED - 150 d
END = utc(2028, 1, 30)  # CONTRACT_END + 30 d


def worker(**changes: Any) -> Worker:
    base: dict[str, Any] = {
        "worker_id": "PMI-1",
        "state": "placed",
        "country": "MY",
        "region": "MY-01",
        "departed_at": DEPARTED,
        "contract_end": CONTRACT_END,
        "has_social_security": True,
    }
    base.update(changes)
    return Worker(**base)


def ctx(data: dict[str, Any] | None = None, id_: str = "inc-ev-1") -> Ctx:
    data = data or {"incident_id": "INC-1", "worker_id": "PMI-1"}
    env = Envelope(
        id=id_,
        source="kjri-johor-bahru/case-desk",
        type="pmi.incident.reported",
        subject="PMI-1",
        data=data,
        time=utc(2027, 6, 1),
    )
    return Ctx(envelope=env, policy=POLICY, now=NOW)


def protection(category: str, severity: str = "high", case_id: str = "CASE-P1", **kw: Any) -> Case:
    return Case(
        case_id=case_id,
        worker_id="PMI-1",
        kind="protection",
        category=category,
        severity=severity,
        post_id="KJRI-JOHOR-BAHRU",
        opened_at=utc(2027, 6, 1),
        country="MY",
        region="MY-01",
        incident_ids=[kw.pop("incident_id", "INC-1")],
        **kw,
    )


def agg_with(w: Worker, *cases: Case) -> Aggregate:
    return Aggregate(worker=w, cases={c.case_id: c for c in cases}, exists=True)


# --- the window ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "window"),
    [
        ({}, (START, END)),
        # no contract_end: default contract (730 d) + post-placement (30 d)
        ({"contract_end": None}, (START, DEPARTED + timedelta(days=760))),
        # an extension (the worker keeps the latest contract_end) moves the end
        ({"contract_end": utc(2028, 6, 30)}, (START, utc(2028, 7, 30))),
        # a return shortens it: returned_at + 30 d, whatever the contract said
        ({"returned_at": utc(2026, 12, 1, 10)}, (START, utc(2026, 12, 31, 10))),
        (
            {"returned_at": utc(2026, 12, 1, 10), "contract_end": None},
            (START, utc(2026, 12, 31, 10)),
        ),
        # a non-procedural departure with a membership keeps its window
        ({"non_procedural": True, "non_procedural_reasons": ["no_worker_card"]}, (START, END)),
        # no membership, or no departure on record: no window
        ({"has_social_security": False}, None),
        ({"departed_at": None, "state": "unregistered_abroad"}, None),
    ],
)
def test_coverage_window(changes, window):
    assert coverage_window(worker(**changes), POLICY) == window


def test_update_coverage_sets_and_clears_the_worker_fields():
    a = agg_with(worker())
    assert update_coverage(a, ctx()) == (START, END)
    assert (a.worker.insured_from, a.worker.insured_until) == (START, END)
    a.worker.contract_end = utc(2028, 6, 30)  # pmi.contract.extended
    update_coverage(a, ctx())
    assert a.worker.insured_until == utc(2028, 7, 30)
    a.worker.returned_at = utc(2027, 2, 1)  # pmi.return.recorded
    update_coverage(a, ctx())
    assert a.worker.insured_until == utc(2027, 3, 3)
    a.worker.has_social_security = False
    assert update_coverage(a, ctx()) is None
    assert (a.worker.insured_from, a.worker.insured_until) == (None, None)


@pytest.mark.parametrize(
    ("at", "covered"),
    [
        # pre-placement start: day granularity (UTC), start day included
        (utc(2025, 8, 12, 23, 59, 59), False),
        (utc(2025, 8, 13, 0, 0), True),  # before 03:00 but on the first day
        (START, True),
        (utc(2025, 8, 14), True),
        (DEPARTED, True),
        # last day (END is 2028-01-30T00:00Z): the whole day is covered
        (END, True),
        (utc(2028, 1, 30, 23, 59, 59, 999999), True),
        (utc(2028, 1, 31, 0, 0), False),
        (utc(2028, 2, 15), False),
        # other offsets are judged by their UTC date
        (datetime(2028, 1, 31, 5, 0, tzinfo=PLUS7), True),  # 2028-01-30T22:00Z
        (datetime(2028, 1, 30, 20, 0, tzinfo=MINUS5), False),  # 2028-01-31T01:00Z
    ],
)
def test_is_covered_boundaries(at, covered):
    assert is_covered(worker(), at, POLICY) is covered


@pytest.mark.parametrize(
    ("changes", "at", "covered"),
    [
        # extension moves the last day
        ({"contract_end": utc(2028, 6, 30)}, utc(2028, 2, 15), True),
        ({"contract_end": utc(2028, 6, 30)}, utc(2028, 7, 30, 23), True),
        ({"contract_end": utc(2028, 6, 30)}, utc(2028, 7, 31), False),
        # return shortens it
        ({"returned_at": utc(2026, 12, 1, 10)}, utc(2026, 12, 31, 23), True),
        ({"returned_at": utc(2026, 12, 1, 10)}, utc(2027, 1, 1), False),
        ({"returned_at": utc(2026, 12, 1, 10)}, utc(2027, 6, 1), False),
        # no membership: never covered
        ({"has_social_security": False}, DEPARTED, False),
    ],
)
def test_is_covered_follows_the_journey(changes, at, covered):
    assert is_covered(worker(**changes), at, POLICY) is covered


# --- coverage_gap ---------------------------------------------------------------------------


def gap_cases(a: Aggregate) -> list[Case]:
    return [c for c in a.cases.values() if c.kind == "coverage_gap"]


@pytest.mark.parametrize("category", GAP)
def test_gap_category_inside_window_opens_nothing(category):
    p = protection(category)
    a = agg_with(worker(), p)
    assert check_incident_coverage(a, ctx(), p, category, utc(2027, 6, 1)) is None
    assert gap_cases(a) == []


@pytest.mark.parametrize("category", GAP)
@pytest.mark.parametrize("occurred_at", [utc(2028, 1, 31), utc(2025, 8, 12, 12)])
def test_gap_category_outside_window_opens_gap(category, occurred_at):
    p = protection(category, severity="critical")
    a = agg_with(worker(), p)
    c = ctx()
    gap = check_incident_coverage(a, c, p, category, occurred_at)
    assert gap is not None and gap_cases(a) == [gap]
    assert gap.category is None
    assert gap.severity == "critical"
    assert gap.cause == "INC-1"
    assert (gap.country, gap.region, gap.post_id) == ("MY", "MY-01", "KJRI-JOHOR-BAHRU")
    assert gap.detail["reason"] == "outside_window"
    assert gap.detail["insured_from"] == "2025-08-13T03:00:00Z"
    assert gap.detail["insured_until"] == "2028-01-30T00:00:00Z"
    assert gap.detail["occurred_at"] == occurred_at.isoformat().replace("+00:00", "Z")
    assert gap.detail["incident_category"] == category
    assert gap.detail["protection_case_id"] == p.case_id
    assert [e.type for e in c.effects.events if e.topic == topics.CASES] == [
        "garda.case.opened",
        "garda.case.assigned",
    ]


@pytest.mark.parametrize(
    "category", ["unpaid_wages", "wants_to_go_home", "trafficking", "lost_contact", "other"]
)
def test_other_categories_never_open_gap(category):
    p = protection(category)
    a = agg_with(worker(has_social_security=False), p)
    assert check_incident_coverage(a, ctx(), p, category, utc(2030, 1, 1)) is None
    assert gap_cases(a) == []


@pytest.mark.parametrize("category", GAP)
def test_no_membership_opens_gap(category):
    p = protection(category, severity="high")
    a = agg_with(worker(has_social_security=False), p)
    gap = check_incident_coverage(a, ctx(), p, category, "2027-06-01T00:00:00Z")
    assert gap is not None
    assert gap.severity == "high"
    assert gap.detail["reason"] == "no_membership"
    assert gap.detail["insured_from"] is None and gap.detail["insured_until"] is None
    assert gap.detail["occurred_at"] == "2027-06-01T00:00:00Z"


def test_unregistered_worker_is_no_membership():
    w = Worker(worker_id="PMI-1", state="unregistered_abroad", country="SA")
    p = protection("accident")
    a = agg_with(w, p)
    gap = check_incident_coverage(a, ctx(), p, "accident", utc(2027, 6, 1))
    assert gap.detail["reason"] == "no_membership"


def test_member_without_departure_is_outside_window():
    p = protection("illness")
    a = agg_with(worker(departed_at=None), p)
    gap = check_incident_coverage(a, ctx(), p, "illness", utc(2027, 6, 1))
    assert gap.detail["reason"] == "outside_window"
    assert gap.detail["insured_until"] is None


def test_last_day_of_coverage_inside_and_outside():
    p = protection("accident")
    a = agg_with(worker(), p)
    assert check_incident_coverage(a, ctx(), p, "accident", utc(2028, 1, 30, 23, 59)) is None
    gap = check_incident_coverage(
        a, ctx({"incident_id": "INC-2"}, "inc-ev-2"), p, "accident", utc(2028, 1, 31)
    )
    assert gap is not None and gap.cause == "INC-2"


def test_gap_replay_is_idempotent():
    p = protection("accident")
    a = agg_with(worker(), p)
    first = check_incident_coverage(a, ctx(), p, "accident", utc(2029, 1, 1))
    replay = ctx()
    again = check_incident_coverage(a, replay, p, "accident", utc(2029, 1, 1))
    assert again is first and len(gap_cases(a)) == 1
    assert replay.effects.events == []
    # the same incident on a fresh aggregate derives the same case id
    p2 = protection("accident")
    other = agg_with(worker(), p2)
    gap2 = check_incident_coverage(other, ctx(), p2, "accident", utc(2029, 1, 1))
    assert gap2.case_id == first.case_id


def test_explicit_incident_id_overrides_the_event():
    p = protection("accident")
    a = agg_with(worker(), p)
    gap = check_incident_coverage(a, ctx(), p, "accident", utc(2029, 1, 1), incident_id="INC-9")
    assert gap.cause == "INC-9" and gap.detail["incident_id"] == "INC-9"


# --- claim_suggested -----------------------------------------------------------------------


def alerts(c: Ctx) -> list[dict[str, Any]]:
    return [e.data for e in c.effects.events if e.type == "garda.alert.claim_suggested"]


def test_death_inside_coverage_suggests_jkm_without_gap():
    p = protection("death", severity="critical")
    a = agg_with(worker(), p)
    c = ctx()
    assert check_incident_coverage(a, c, p, "death", utc(2027, 6, 1)) is None
    [alert] = alerts(c)
    assert alert["program"] == "JKM"
    assert alert["incident_id"] == "INC-1"
    assert alert["case_id"] == p.case_id
    assert alert["covered"] is True
    assert alert["worker_id"] == "PMI-1"
    assert p.claim_suggested == "JKM"
    assert p.public()["detail"]["claim_suggested"]["program"] == "JKM"  # as published


def test_death_outside_coverage_opens_gap_and_still_suggests():
    p = protection("death", severity="critical")
    a = agg_with(worker(), p)
    c = ctx()
    gap = check_incident_coverage(a, c, p, "death", utc(2029, 6, 1))
    assert gap is not None and gap.severity == "critical"
    [alert] = alerts(c)
    assert alert["covered"] is False and alert["program"] == "JKM"


def test_death_after_open_accident_case_suggests_jkk():
    accident = protection("accident", case_id="CASE-A", incident_id="INC-0")
    death = protection("death", severity="critical")
    a = agg_with(worker(), accident, death)
    c = ctx()
    check_incident_coverage(a, c, death, "death", utc(2027, 6, 1))
    assert alerts(c)[0]["program"] == "JKK"


def test_resolved_accident_case_does_not_make_it_jkk():
    accident = protection("accident", case_id="CASE-A", incident_id="INC-0", status="resolved")
    death = protection("death", severity="critical")
    a = agg_with(worker(), accident, death)
    assert suggested_program(a, death) == "JKM"
    assert suggested_program(a, death, work_accident=True) == "JKK"
    c = ctx()
    check_incident_coverage(a, c, death, "death", utc(2027, 6, 1), work_accident=True)
    assert alerts(c)[0]["program"] == "JKK"


def test_claim_suggested_once_per_case():
    p = protection("death", severity="critical")
    a = agg_with(worker(), p)
    check_incident_coverage(a, ctx(), p, "death", utc(2027, 6, 1))
    second = ctx({"incident_id": "INC-2"}, "inc-ev-2")
    check_incident_coverage(a, second, p, "death", utc(2027, 6, 1))
    assert alerts(second) == []


@pytest.mark.parametrize("category", ["accident", "illness", "employer_violence"])
def test_no_claim_suggested_for_other_categories(category):
    p = protection(category)
    a = agg_with(worker(), p)
    c = ctx()
    check_incident_coverage(a, c, p, category, utc(2027, 6, 1))
    assert alerts(c) == []
