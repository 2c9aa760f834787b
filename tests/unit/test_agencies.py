"""Agency scorecard rules: attribution, the numbers, the alert boundary, the report."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from errors import ConfigError
from handlers.agencies import CaseRow, crosses, scorecard
from handlers.dispatch import handle
from handlers.prevention_policy import Agencies
from infra.reports import parse_since, render
from tests.unit.factories import POLICY, T0, D, H, aggregate, departure, envelope, incident

POLICY_A = replace(
    POLICY,
    prevention=replace(
        POLICY.prevention, agencies=Agencies(alert_rate_per_100=5.0, alert_min_placements=20)
    ),
)


def card(placements: int, cases: int):
    rows = [CaseRow("protection", "unpaid_wages", "high", T0) for _ in range(cases)]
    return scorecard(
        "SIP3MI-1", placements=placements, non_procedural=0, cases=rows, claims_rejected=0
    )


@pytest.mark.parametrize(
    ("placements", "cases", "alert"),
    [
        (20, 1, True),  # exactly 5 per 100, exactly the minimum volume
        (19, 1, False),  # 5.26 per 100 but under the minimum volume
        (21, 1, False),  # 4.76 per 100
        (3, 1, False),  # one case in three placements: no pattern
        (40, 2, True),
        (0, 0, False),
    ],
)
def test_alert_needs_rate_and_volume(placements: int, cases: int, alert: bool) -> None:
    assert crosses(card(placements, cases), POLICY_A) is alert


def test_scorecard_numbers() -> None:
    rows = [
        CaseRow("protection", "unpaid_wages", "high", T0, T0 + 2 * D),
        CaseRow("protection", "unpaid_wages", "high", T0, T0 + 4 * D),
        CaseRow("protection", "sexual_violence", "critical", T0),
        CaseRow("non_procedural_departure", None, "high", T0),  # not a protection case
    ]
    c = scorecard("SIP3MI-1", placements=50, non_procedural=3, cases=rows, claims_rejected=2)
    pub = c.public()
    assert pub["cases"] == 3 and pub["cases_per_100"] == 6.0
    assert pub["by_category"] == {
        "sexual_violence": {"cases": 1, "per_100": 2.0},
        "unpaid_wages": {"cases": 2, "per_100": 4.0},
    }
    assert pub["by_severity"]["critical"] == {"cases": 1, "per_100": 2.0}
    assert pub["median_days_to_resolve"] == 3.0
    assert pub["non_procedural"] == 3 and pub["claims_rejected"] == 2
    assert (
        scorecard("X", placements=0, non_procedural=0, cases=[], claims_rejected=0).cases_per_100
        is None
    )


def test_cases_of_the_journey_are_attributed_to_its_licence() -> None:
    agg = handle(
        aggregate(),
        envelope("pmi.departure.recorded", departure(p3mi_license=" SIP3MI-9 "), time=T0),
        POLICY_A,
        T0 + H,
    ).aggregate
    assert agg.worker.p3mi_license == "SIP3MI-9"
    agg = handle(
        agg, envelope("pmi.incident.reported", incident("INC-1"), time=T0 + D), POLICY_A, T0 + D + H
    ).aggregate
    (case,) = agg.cases.values()
    assert case.detail["p3mi_license"] == "SIP3MI-9"
    # a new journey without a licence: its cases are not attributed; the old one keeps it
    agg = handle(
        agg,
        envelope(
            "pmi.departure.recorded",
            departure(T0 + 10 * D, p3mi_license=None, scheme="g2g"),
            time=T0 + 10 * D,
        ),
        POLICY_A,
        T0 + 10 * D + H,
    ).aggregate
    assert agg.worker.p3mi_license is None
    agg = handle(
        agg,
        envelope("pmi.incident.reported", incident("INC-2", "accident"), time=T0 + 11 * D),
        POLICY_A,
        T0 + 11 * D + H,
    ).aggregate
    new = [c for c in agg.cases.values() if c.case_id != case.case_id]
    assert new and all("p3mi_license" not in c.detail for c in new)
    assert agg.cases[case.case_id].detail["p3mi_license"] == "SIP3MI-9"


def test_a_non_procedural_departure_case_is_attributed() -> None:
    data = departure(p3mi_license="SIP3MI-9", visa_type="visit")
    agg = handle(
        aggregate(), envelope("pmi.departure.recorded", data, time=T0), POLICY_A, T0 + H
    ).aggregate
    (case,) = agg.cases.values()
    assert case.kind == "non_procedural_departure" and case.detail["p3mi_license"] == "SIP3MI-9"


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, NOW - timedelta(days=365)),
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-06-01T00:00:00Z", datetime(2026, 6, 1, tzinfo=UTC)),
        ("90d", NOW - timedelta(days=90)),
    ],
)
def test_parse_since(value: str | None, expected: datetime) -> None:
    assert parse_since(value, POLICY_A, NOW) == expected


def test_parse_since_refuses_nonsense() -> None:
    with pytest.raises(ConfigError, match="--since"):
        parse_since("last tuesday", POLICY_A, NOW)


def test_render_csv_and_table() -> None:
    text = render([card(40, 2)], as_csv=True)
    assert text.splitlines()[0].startswith("license,placements,cases,cases_per_100")
    assert text.splitlines()[1].startswith("SIP3MI-1,40,2,5.0,0,,0,unpaid_wages=2,high=2")
    table = render([card(40, 2)], as_csv=False)
    assert "SIP3MI-1" in table and "placements" in table.splitlines()[0]
