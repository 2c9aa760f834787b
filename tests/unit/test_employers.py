"""Employer watchlist rules: identity, linking cases, the threshold and window, visits."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers import employers
from handlers.context import Ctx
from handlers.dispatch import handle
from handlers.employers import EmployerCase, employer_key, normalize_name, watchlist_decision
from handlers.model import Aggregate, iso
from handlers.prevention_policy import Employers
from handlers.routing import normalize_country, normalize_region
from schemas.types import validate_data
from tests.unit.factories import POLICY, T0, D, H, aggregate, departure, envelope, incident

S = timedelta(seconds=1)
RULE = Employers(threshold=3, window=timedelta(days=365))
POLICY_E = replace(POLICY, prevention=replace(POLICY.prevention, employers=RULE))


# --- identity ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "PT Maju Jaya",
        "pt maju jaya",
        "  PT   Maju\tJaya  ",
        "PT. Maju Jaya",
        "P.T. Maju Jaya",
        "ＰＴ　Ｍａｊｕ　Ｊａｙａ",  # full-width forms and an ideographic space (NFKC)
    ],
)
def test_names_with_other_spacing_case_and_punctuation_are_one_employer(name: str) -> None:
    # "P.T." reads as "p t": one employer only when written the same way otherwise
    expected = "p t maju jaya" if name.startswith("P.T.") else "pt maju jaya"
    assert normalize_name(name) == expected
    if expected == "pt maju jaya":
        assert employer_key(name, "MY") == employer_key("PT Maju Jaya", "MY")


def test_the_country_is_part_of_the_identity() -> None:
    assert employer_key("Tan Family", "HK") != employer_key("Tan Family", "SG")
    assert employer_key("Tan Family", "hk") == employer_key("Tan Family", "HK")


@pytest.mark.parametrize("name", [None, "", "   ", "...", 5])
def test_no_usable_name(name: Any) -> None:
    assert employer_key(name, "MY") is None
    assert employer_key("Tan Family", None) is None


# --- the rule -----------------------------------------------------------------------------


def ec(n: int, at, category="unpaid_wages", substantiated=True, status="resolved") -> EmployerCase:
    return EmployerCase(f"case-{n}", category, substantiated, at, status)


def test_threshold_reached_exactly() -> None:
    two = [ec(1, T0), ec(2, T0 + D)]
    assert watchlist_decision(two, POLICY_E) == (False, [])
    three = [*two, ec(3, T0 + 2 * D)]
    assert watchlist_decision(three, POLICY_E) == (True, ["case-1", "case-2", "case-3"])


def test_window_edges() -> None:
    at_edge = [ec(1, T0), ec(2, T0 + 100 * D), ec(3, T0 + 365 * D)]
    assert watchlist_decision(at_edge, POLICY_E)[0] is True  # exactly one window apart
    past_edge = [ec(1, T0), ec(2, T0 + 100 * D), ec(3, T0 + 365 * D + S)]
    assert watchlist_decision(past_edge, POLICY_E) == (False, [])


def test_sliding_window_takes_the_latest_run() -> None:
    cases = [ec(1, T0), ec(2, T0 + 400 * D), ec(3, T0 + 500 * D), ec(4, T0 + 600 * D)]
    assert watchlist_decision(cases, POLICY_E) == (True, ["case-2", "case-3", "case-4"])


@pytest.mark.parametrize(
    "other",
    [
        ec(3, T0, substantiated=False),
        ec(3, T0, substantiated=None),
        ec(3, T0, category="wants_to_go_home"),  # not a listed category
        ec(3, T0, status="reopened"),  # no longer resolved
    ],
)
def test_what_does_not_count(other: EmployerCase) -> None:
    assert watchlist_decision([ec(1, T0), ec(2, T0 + D), other], POLICY_E) == (False, [])


def test_order_does_not_matter() -> None:
    cases = [ec(3, T0 + 2 * D), ec(1, T0), ec(2, T0 + D)]
    assert watchlist_decision(cases, POLICY_E) == watchlist_decision(cases[::-1], POLICY_E)


def test_event_ids_are_stable_and_differ_per_change() -> None:
    emp = {"key": "EMP-1", "name": "pt maju jaya", "country": "MY", "region": None}
    on = employers.watchlist_event(emp, True, ["b", "a"], POLICY_E)
    assert on.id == employers.watchlist_event(emp, True, ["a", "b"], POLICY_E).id
    off = employers.watchlist_event(emp, False, ["a", "b"], POLICY_E)
    assert on.type == "garda.employer.watchlisted" and off.type == "garda.employer.delisted"
    assert on.id != off.id and on.key == "EMP-1" and on.data["cases"] == ["a", "b"]


# --- per worker ----------------------------------------------------------------------------


def run(agg: Aggregate, type_: str, data: dict[str, Any], at, watchlisted=frozenset()):
    env = envelope(
        type_, validate_data(type_, {"worker_id": agg.worker.worker_id, **data}), time=at
    )
    return handle(agg, env, POLICY_E, at + H, watchlisted=watchlisted)


def test_departure_records_the_employer_and_new_cases_link_to_it() -> None:
    agg = run(
        aggregate(), "pmi.departure.recorded", departure(employer_name="PT  Maju Jaya"), T0
    ).aggregate
    key = employer_key("pt maju jaya", "MY")
    assert agg.worker.employer == {
        "key": key,
        "name": "pt maju jaya",
        "country": "MY",
        "region": "MY-01",
    }
    agg = run(agg, "pmi.incident.reported", incident("INC-1"), T0 + D).aggregate
    (case,) = agg.cases.values()
    assert case.detail["employer"] == key
    # a later placement elsewhere does not move the case
    arrival = {"country": "MY", "reported_at": iso(T0 + 2 * D), "employer_name": "Other Sdn Bhd"}
    agg = run(agg, "pmi.arrival.reported", arrival, T0 + 2 * D).aggregate
    assert agg.cases[case.case_id].detail["employer"] == key
    assert agg.worker.employer["key"] == employer_key("other sdn bhd", "MY")


def test_a_departure_applied_after_its_incident_links_the_case_as_if_it_came_first() -> None:
    # The incident (urgent lane) is applied before the departure that precedes it (bulk lane).
    agg = run(aggregate(), "pmi.incident.reported", incident("INC-1"), T0 + D).aggregate
    (case,) = agg.cases.values()
    assert "employer" not in case.detail
    dep = departure(employer_name="PT Maju Jaya", p3mi_license="P3MI-LATE-1")
    agg = run(agg, "pmi.departure.recorded", dep, T0).aggregate
    assert agg.cases[case.case_id].detail["employer"] == employer_key("pt maju jaya", "MY")
    assert agg.cases[case.case_id].detail["p3mi_license"] == "P3MI-LATE-1"
    # a placement that begins after the case opened does not claim it
    agg2 = run(aggregate(), "pmi.incident.reported", incident("INC-2"), T0).aggregate
    agg2 = run(agg2, "pmi.departure.recorded", dep, T0 + D).aggregate
    (case2,) = agg2.cases.values()
    assert "employer" not in case2.detail and "p3mi_license" not in case2.detail


def test_an_arrival_without_region_keeps_the_known_one() -> None:
    agg = run(aggregate(), "pmi.departure.recorded", departure(employer_name="Tan"), T0).aggregate
    arrival = {"country": "MY", "reported_at": iso(T0 + D), "employer_name": "TAN"}
    agg = run(agg, "pmi.arrival.reported", arrival, T0 + D).aggregate
    assert agg.worker.employer["region"] == "MY-01"


def test_a_watchlisted_employer_flags_the_worker_and_opens_a_visit() -> None:
    key = employer_key("PT Maju Jaya", "MY")
    res = run(
        aggregate(),
        "pmi.departure.recorded",
        departure(employer_name="pt. maju  JAYA"),
        T0,
        frozenset({key}),
    )
    w = res.aggregate.worker
    assert w.flags == ["watchlisted_employer"]
    (case,) = [c for c in res.aggregate.cases.values() if c.kind == "preventive_visit"]
    assert case.post_id == "KJRI-JOHOR-BAHRU" and case.severity == "medium"
    assert case.detail["employer"] == key
    alert = next(e for e in res.effects.events if e.type == "garda.alert.watchlisted-employer")
    assert alert.data["post_id"] == "KJRI-JOHOR-BAHRU" and alert.data["employer"] == key
    # the arrival with the same employer opens a visit for that step only once
    arrival = {"country": "MY", "reported_at": iso(T0 + D), "employer_name": "PT Maju Jaya"}
    again = run(res.aggregate, "pmi.arrival.reported", arrival, T0 + D, frozenset({key}))
    visits = [c for c in again.aggregate.cases.values() if c.kind == "preventive_visit"]
    assert len(visits) == 2  # the placement (arrival) is a second step: a second visit
    assert again.aggregate.worker.flags == ["watchlisted_employer"]


def test_a_replayed_departure_opens_no_second_visit() -> None:
    key = employer_key("PT Maju Jaya", "MY")
    env = envelope(
        "pmi.departure.recorded",
        validate_data(
            "pmi.departure.recorded",
            {"worker_id": "PMI-2024-000123", **departure(employer_name="PT Maju Jaya")},
        ),
        time=T0,
    )
    first = handle(aggregate(), env, POLICY_E, T0 + H, watchlisted=frozenset({key})).aggregate
    second = handle(first, env, POLICY_E, T0 + H, watchlisted=frozenset({key}))
    assert len([c for c in second.aggregate.cases.values() if c.kind == "preventive_visit"]) == 1
    assert not [e for e in second.effects.events if e.type == "garda.alert.watchlisted-employer"]


def test_not_watchlisted_no_visit() -> None:
    res = run(aggregate(), "pmi.departure.recorded", departure(employer_name="PT Maju Jaya"), T0)
    assert res.aggregate.worker.flags == []
    assert not [c for c in res.aggregate.cases.values() if c.kind == "preventive_visit"]


def test_resolution_records_substantiated() -> None:
    agg = run(aggregate(), "pmi.departure.recorded", departure(employer_name="Tan"), T0).aggregate
    agg = run(agg, "pmi.incident.reported", incident("INC-1"), T0 + D).aggregate
    (case,) = agg.cases.values()
    base = {"case_id": case.case_id, "actor": "o-1", "post_id": case.post_id, "resolution": "paid"}
    done = run(
        agg, "pmi.case.resolved", {**base, "substantiated": True, "at": iso(T0 + 2 * D)}, T0 + 2 * D
    )
    assert done.aggregate.cases[case.case_id].detail["substantiated"] is True
    ev = next(e for e in done.effects.events if e.type == "garda.case.resolved")
    assert ev.data["event"]["substantiated"] is True
    reopened = run(
        done.aggregate,
        "pmi.case.reopened",
        {k: base[k] for k in ("case_id", "actor", "post_id")} | {"at": iso(T0 + 3 * D)},
        T0 + 3 * D,
    ).aggregate
    assert "substantiated" not in reopened.cases[case.case_id].detail
    with pytest.raises(Exception, match="true or false"):
        validate_data("pmi.case.resolved", {"worker_id": "w", **base, "substantiated": "yes"})


_TEXTS = st.none() | st.sampled_from(["PT Maju Jaya", " pt. maju  jaya", "", " ", "Ltd", "my"])


@given(
    name=_TEXTS | st.text(max_size=12),
    country=_TEXTS | st.sampled_from(["MY", " my ", "TW"]),
    region=_TEXTS | st.sampled_from(["01", "MY-10", " tw-x "]),
    departure=st.booleans(),
)
def test_the_remembered_employer_is_the_one_computed(
    name: str | None, country: str | None, region: str | None, departure: bool
) -> None:
    # _employer_of remembers (name, country, region): the first call and the remembered
    # one give what the normalisation gives, each a new dict the caller may change
    type_ = "pmi.departure.recorded" if departure else "pmi.arrival.reported"
    prefix = "destination_" if departure else ""
    data = {"employer_name": name, f"{prefix}country": country, f"{prefix}region": region}
    ctx = Ctx(envelope=envelope(type_, data), policy=POLICY, now=T0)
    norm, c = normalize_name(name), normalize_country(country)
    key = employers._key(norm, c)
    assert employer_key(name, country) == key  # remembered too
    assert employer_key(name, country) == key
    expected = None
    if key is not None:
        expected = {"key": key, "name": norm, "country": c, "region": normalize_region(c, region)}
    first = employers._employer_of(data, ctx)
    assert first == expected
    if first is not None:
        first["region"] = "changed"
    assert employers._employer_of(data, ctx) == expected
