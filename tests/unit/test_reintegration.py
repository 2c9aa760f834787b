"""Reintegration referrals: which returns open a case, where it goes, its ladder, the JKM claim."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from errors import ConfigError
from handlers import clocks, reintegration
from handlers.dispatch import handle
from handlers.escalation import next_deadline
from handlers.model import Aggregate, Case, iso
from handlers.policy import load_policy, policy_from_dict
from handlers.prevention_policy import ServiceUnit
from tests.unit.factories import POLICY, T0, D, H, aggregate, departure, envelope, incident

S = timedelta(seconds=1)
DESMIGRATIF = ServiceUnit(
    "DESMIGRATIF-3507-TEST", "Desmigratif test village", "desmigratif", "35", "3507", "3507010001"
)
_reint = POLICY.prevention.reintegration
POLICY_D = replace(
    POLICY,
    prevention=replace(
        POLICY.prevention, reintegration=replace(_reint, units=(*_reint.units, DESMIGRATIF))
    ),
)
ORIGIN = {"province": "35", "regency": "3507", "village": "3507020002"}
RETURNED = T0 + 100 * D


def run(agg: Aggregate, type_: str, data: dict[str, Any], at, policy=POLICY_D):
    return handle(agg, envelope(type_, data, time=at), policy, at + H)


def departed(origin: dict[str, str] | None = ORIGIN) -> Aggregate:
    agg = aggregate()
    data = departure(origin=origin) if origin is not None else departure()
    return run(agg, "pmi.departure.recorded", data, T0).aggregate


def returned(agg: Aggregate, reason: str, at=RETURNED):
    return run(agg, "pmi.return.recorded", {"returned_at": iso(at), "reason": reason}, at)


def reint_cases(agg: Aggregate) -> list[Case]:
    return [c for c in agg.cases.values() if c.kind == "reintegration"]


# --- routing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "unit"),
    [
        ({"province": "35", "regency": "3507", "village": "3507010001"}, "DESMIGRATIF-3507-TEST"),
        (
            {"province": " 35 ", "regency": "3507 ", "village": " 3507010001"},
            "DESMIGRATIF-3507-TEST",
        ),
        ({"province": "35", "regency": "3507", "village": "3507010002"}, "DISNAKER-KAB-MALANG"),
        ({"province": "35", "regency": "3507"}, "DISNAKER-KAB-MALANG"),
        ({"province": "35", "regency": "3578"}, "DISNAKERTRANS-JATIM"),
        ({"province": "35"}, "DISNAKERTRANS-JATIM"),
        ({"province": "11", "regency": "1101"}, "HQ"),
        ({"regency": "3507"}, "HQ"),  # no province: nothing to match on
        ({}, "HQ"),
        (None, "HQ"),
    ],
)
def test_route_origin(origin: dict[str, str] | None, unit: str) -> None:
    decision = reintegration.route_origin(POLICY_D, origin)
    assert decision.post_id == unit
    assert decision.note
    if unit == "HQ":
        assert "routed to headquarters" in decision.note


def test_departure_keeps_the_origin() -> None:
    agg = departed()
    assert agg.worker.origin == ORIGIN
    # a later departure without origin keeps the one known
    again = run(agg, "pmi.departure.recorded", departure(T0 + 2 * D), T0 + 2 * D).aggregate
    assert again.worker.origin == ORIGIN


# --- triggers ------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["repatriated", "deported", "medical", "deceased"])
def test_listed_reasons_open_one_case_at_the_origin(reason: str) -> None:
    res = returned(departed(), reason)
    (case,) = reint_cases(res.aggregate)
    assert case.post_id == "DISNAKER-KAB-MALANG"
    assert case.detail["trigger"] == f"return reason {reason}"
    assert case.severity == ("high" if reason == "deceased" else "medium")
    assert case.country is None
    alert = next(e for e in res.effects.events if e.type == "garda.alert.reintegration")
    assert alert.data["post_id"] == "DISNAKER-KAB-MALANG"
    types = [e.type for e in res.effects.events if e.type.startswith("garda.case.")]
    assert types[:2] == ["garda.case.opened", "garda.case.assigned"]


@pytest.mark.parametrize("reason", ["contract_completed", "other"])
def test_a_planned_return_with_no_protection_history_opens_nothing(reason: str) -> None:
    assert reint_cases(returned(departed(), reason).aggregate) == []


def with_protection_case(resolved_at=None) -> Aggregate:
    agg = departed()
    agg = run(agg, "pmi.incident.reported", incident("INC-1", "unpaid_wages"), T0 + D).aggregate
    if resolved_at is not None:
        (case,) = agg.cases.values()
        data = {
            "case_id": case.case_id,
            "actor": "o-1",
            "post_id": case.post_id,
            "resolution": "wages paid",
            "at": iso(resolved_at),
        }
        agg = run(agg, "pmi.case.resolved", data, resolved_at).aggregate
    return agg


def test_any_return_with_an_open_protection_case() -> None:
    (case,) = reint_cases(returned(with_protection_case(), "contract_completed").aggregate)
    assert case.detail["trigger"].startswith("protection case ")
    assert case.detail["trigger"].endswith(" open")


def test_protection_resolved_exactly_90_days_before_the_return_counts() -> None:
    agg = with_protection_case(resolved_at=RETURNED - 90 * D)
    assert len(reint_cases(returned(agg, "contract_completed").aggregate)) == 1


def test_protection_resolved_more_than_90_days_before_does_not() -> None:
    agg = with_protection_case(resolved_at=RETURNED - 90 * D - S)
    assert reint_cases(returned(agg, "contract_completed").aggregate) == []


def test_one_case_per_return_replays_and_resends_open_nothing_twice() -> None:
    agg = departed()
    env = envelope(
        "pmi.return.recorded", {"returned_at": iso(RETURNED), "reason": "deported"}, time=RETURNED
    )
    first = handle(agg, env, POLICY_D, RETURNED + H).aggregate
    again = handle(first, env, POLICY_D, RETURNED + H).aggregate  # the same return re-sent
    assert len(reint_cases(again)) == 1
    # a correction (another return time) while the case is open opens none either
    later = returned(again, "medical", RETURNED + H).aggregate
    assert len(reint_cases(later)) == 1


def test_stale_return_opens_nothing() -> None:
    agg = run(
        departed(),
        "pmi.arrival.reported",
        {"country": "MY", "reported_at": iso(T0 + 5 * D)},
        T0 + 5 * D,
    ).aggregate
    res = returned(agg, "deported", T0 + D)  # before the arrival: stale
    assert res.outcome == "stale" and reint_cases(res.aggregate) == []


# --- its own ladder -------------------------------------------------------------------------


def test_own_sla_ladder() -> None:
    (case,) = reint_cases(returned(departed(), "deported").aggregate)
    sla = POLICY_D.prevention.reintegration.sla
    assert case.ack_due == case.opened_at + sla.ack == case.opened_at + 3 * D
    assert case.resolve_due == case.opened_at + sla.resolve
    assert next_deadline(case, POLICY_D) == (case.opened_at + sla.ack, "ack", 1)
    lvl1 = replace(case, escalation_level=1)
    assert next_deadline(lvl1, POLICY_D) == (case.opened_at + sla.level2, "ack", 2)


def test_reopen_keeps_its_own_ladder() -> None:
    agg = returned(departed(), "deported").aggregate
    (case,) = reint_cases(agg)
    base = {"case_id": case.case_id, "actor": "o-1", "post_id": "HQ"}
    at = case.opened_at + D
    agg = run(
        agg, "pmi.case.resolved", {**base, "resolution": "enrolled", "at": iso(at)}, at
    ).aggregate
    agg = run(agg, "pmi.case.reopened", {**base, "at": iso(at + H)}, at + H).aggregate
    reopened = agg.cases[case.case_id]
    assert reopened.ack_due - (at + H) == POLICY_D.prevention.reintegration.sla.ack


# --- deceased: the family's JKM claim --------------------------------------------------------


def jkm_claim(claim_id: str = "JKM-1", at=RETURNED + D) -> dict[str, Any]:
    return {
        "claim_id": claim_id,
        "program": "JKM",
        "event_date": (RETURNED - D).date().isoformat(),
        "filed_at": iso(at),
    }


def test_jkm_claim_filed_later_is_linked() -> None:
    agg = returned(departed(), "deceased").aggregate
    (case,) = reint_cases(agg)
    assert reintegration.reminder_due(case) == case.opened_at + 30 * D
    res = run(agg, "pmi.claim.filed", jkm_claim(), RETURNED + D)
    case = res.aggregate.cases[case.case_id]
    assert case.claim_id == "JKM-1"
    assert case.public()["detail"]["jkm"]["claim_id"] == "JKM-1"  # as published
    assert res.aggregate.claims["JKM-1"].case_id == case.case_id
    assert "garda.case.claim-linked" in [e.type for e in res.effects.events]
    assert reintegration.reminder_due(case) is None
    assert clocks.case_next_due(case, POLICY_D) == case.ack_due


def test_jkm_claim_already_on_record_is_linked_at_once() -> None:
    agg = departed()
    agg = run(agg, "pmi.claim.filed", jkm_claim(at=RETURNED - H), RETURNED - H).aggregate
    (case,) = reint_cases(returned(agg, "deceased").aggregate)
    assert case.claim_id == "JKM-1"


def test_a_jkk_claim_is_not_the_family_claim() -> None:
    agg = returned(departed(), "deceased").aggregate
    agg = run(agg, "pmi.claim.filed", {**jkm_claim(), "program": "JKK"}, RETURNED + D).aggregate
    (case,) = reint_cases(agg)
    assert case.claim_id is None and case.jkm_due is not None


def reminder(agg: Aggregate, now, due=None):
    (case,) = reint_cases(agg)
    data = {"case_id": case.case_id, "due_at": iso(due or reintegration.reminder_due(case))}
    env = envelope(reintegration.REMINDER_COMMAND, data, time=now, source="garda/timer")
    return handle(agg, env, POLICY_D, now)


def test_reminder_fires_once_at_the_period_end() -> None:
    agg = returned(departed(), "deceased").aggregate
    (case,) = reint_cases(agg)
    due = case.opened_at + 30 * D
    assert reintegration.due_commands([case], due - S) == []
    assert [c[0] for c in reintegration.due_commands([case], due)] == [
        reintegration.REMINDER_COMMAND
    ]
    assert reminder(agg, due - S, due).outcome == "stale-deadline"
    res = reminder(agg, due)
    assert res.outcome == "reminded"
    alert = next(e for e in res.effects.events if e.type == "garda.alert.jkm-claim-missing")
    assert alert.data["post_id"] == "DISNAKER-KAB-MALANG"
    again = reminder(res.aggregate, due + D, due)
    assert again.outcome == "stale-deadline" and again.effects.events == []
    assert reintegration.due_commands(reint_cases(res.aggregate), due + 100 * D) == []


def test_no_reminder_for_a_non_deceased_return() -> None:
    (case,) = reint_cases(returned(departed(), "medical").aggregate)
    assert case.jkm_due is None and reintegration.reminder_due(case) is None
    assert "jkm" not in case.public()["detail"]


# --- policy -----------------------------------------------------------------------------------


def _doc(**reintegration_table: Any) -> dict[str, Any]:
    import tomllib

    from handlers.policy import DEFAULT_POLICY_PATH

    doc = tomllib.loads(DEFAULT_POLICY_PATH.read_text())
    doc["reintegration"] = {**doc["reintegration"], **reintegration_table}
    return doc


def test_default_policy_units() -> None:
    units = {u.unit_id: u for u in load_policy().prevention.reintegration.units}
    assert units["DISNAKER-KAB-MALANG"].regency == "3507"
    assert units["DISNAKERTRANS-JATIM"].kind == "province_office"


@pytest.mark.parametrize(
    ("units", "message"),
    [
        ([{"unit_id": "X", "name": "x", "kind": "desmigratif", "province": "35"}], "needs exactly"),
        (
            [{"unit_id": "X", "name": "x", "kind": "regency_office", "province": "35"}],
            "needs exactly",
        ),
        (
            [
                {"unit_id": "X", "name": "x", "kind": "province_office", "province": "35"},
                {"unit_id": "X", "name": "y", "kind": "province_office", "province": "36"},
            ],
            "listed twice",
        ),
        (
            [
                {"unit_id": "X", "name": "x", "kind": "province_office", "province": "35"},
                {"unit_id": "Y", "name": "y", "kind": "province_office", "province": "35"},
            ],
            "same codes",
        ),
        ([{"unit_id": "X", "name": "x", "kind": "village", "province": "35"}], "not one of"),
    ],
)
def test_bad_units_are_refused(units: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy_from_dict(_doc(units=units))


def test_bad_reason_is_refused() -> None:
    with pytest.raises(ConfigError, match="reasons"):
        policy_from_dict(_doc(reasons=["homesick"]))
