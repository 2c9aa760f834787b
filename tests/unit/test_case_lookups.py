"""The one-pass case look-ups against the sorted walks they replaced: ``case_holding``,
``find_attachable_case`` and ``recheck_gaps``' choice of cases, over random sets of cases
with repeated times (ties) and every status, kind and category."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.cases import PROTECTION, find_attachable_case
from handlers.incidents import case_holding
from handlers.model import CASE_STATUSES, Aggregate, Case, Worker
from handlers.policy import Policy
from tests.unit.factories import POLICY, T0, WORKER

H = timedelta(hours=1)


def _old_case_holding(agg: Aggregate, incident_id: str) -> Case | None:
    for case in sorted(agg.cases.values(), key=lambda c: (c.opened_at, c.case_id)):
        if incident_id in case.incident_ids:
            return case
    return None


def _old_find_attachable_case(
    agg: Aggregate, category: str | None, at: datetime, policy: Policy
) -> Case | None:
    best: Case | None = None
    for case in sorted(agg.cases.values(), key=lambda c: c.case_id):
        if case.kind != PROTECTION or not case.is_open or case.category != category:
            continue
        last = case.last_report_at or case.opened_at
        if abs(at - last) > policy.dedup_window:
            continue
        if best is None or last > (best.last_report_at or best.opened_at):
            best = case
    return best


_case = st.builds(
    lambda n, kind, category, status, opened, last, ids: Case(
        case_id=f"CASE-{n}",
        worker_id=WORKER,
        kind=kind,
        category=category,
        severity="medium",
        post_id="P",
        opened_at=T0 + opened * H,
        status=status,
        last_report_at=None if last is None else T0 + last * H,
        incident_ids=[f"I{i}" for i in ids],
    ),
    n=st.integers(0, 9),
    kind=st.sampled_from([PROTECTION, "coverage_gap"]),
    category=st.sampled_from(["unpaid_wages", "illness", None]),
    status=st.sampled_from(CASE_STATUSES),
    opened=st.integers(0, 4),
    last=st.none() | st.integers(0, 150),
    ids=st.lists(st.integers(0, 3), max_size=3),
)


@settings(max_examples=300)
@given(
    cases=st.lists(_case, max_size=8),
    incident=st.integers(0, 3),
    category=st.sampled_from(["unpaid_wages", "illness", None]),
    at=st.integers(0, 160),
)
def test_one_pass_look_ups_choose_the_case_the_sorted_walks_chose(
    cases: list[Case], incident: int, category: str | None, at: int
) -> None:
    agg = Aggregate(Worker(WORKER))
    for i, case in enumerate(cases):
        # a few keys not equal to the case id: equal ids and equal times meet
        agg.cases[case.case_id if i % 3 else f"{case.case_id}#{i}"] = case
    when = T0 + at * H
    assert case_holding(agg, f"I{incident}") is _old_case_holding(agg, f"I{incident}")
    got = find_attachable_case(agg, category, when, POLICY)
    assert got is _old_find_attachable_case(agg, category, when, POLICY)
