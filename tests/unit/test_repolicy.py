"""garda repolicy's rules: which open cases get new deadlines, and applying the command."""

from __future__ import annotations

from dataclasses import replace

import pytest

from errors import Rejected
from handlers.dispatch import handle
from handlers.model import Case, iso
from handlers.policy import Policy, Sla
from handlers.repolicy import RECOMPUTE, changes_for, command_data, sla_digest
from infra.repolicy import plan
from tests.unit.factories import T0, WORKER, S, aggregate, envelope, fast_policy

OLD = fast_policy()


def shorter(policy: Policy, severity: str = "high", factor: int = 2) -> Policy:
    sla = policy.sla[severity]
    new = Sla(
        ack=sla.ack / factor,
        level2=sla.level2 / factor if sla.level2 else None,
        resolve=sla.resolve / factor,
    )
    return replace(policy, sla={**policy.sla, severity: new})


NEW = shorter(OLD)


def case(**overrides: object) -> Case:
    sla = OLD.sla["high"]
    c = Case(
        case_id="CASE-1",
        worker_id=WORKER,
        kind="protection",
        category="accident",
        severity="high",
        post_id="CON",
        opened_at=T0,
        ack_due=T0 + sla.ack,
        resolve_due=T0 + sla.resolve,
    )
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def test_unchanged_policy_changes_nothing() -> None:
    assert changes_for(case(), OLD) == {}


def test_shorter_sla_moves_both_deadlines_from_the_opening() -> None:
    got = changes_for(case(), NEW)
    assert got == {
        "ack_due": (T0 + 20 * S, T0 + 10 * S),
        "resolve_due": (T0 + 600 * S, T0 + 300 * S),
    }


def test_other_severities_are_untouched() -> None:
    assert (
        changes_for(case(severity="medium", ack_due=T0 + 30 * S, resolve_due=T0 + 900 * S), NEW)
        == {}
    )


def test_acknowledged_case_keeps_its_ack_due() -> None:
    got = changes_for(case(status="acknowledged"), NEW)
    assert set(got) == {"resolve_due"}


def test_resolved_case_is_never_touched() -> None:
    assert changes_for(case(status="resolved"), NEW) == {}


def test_fired_resolve_deadline_is_kept() -> None:
    c = case()
    c.resolve_deadline_missed = c.resolve_due
    assert set(changes_for(c, NEW)) == {"ack_due"}


def test_clock_restarts_at_reopen() -> None:
    reopened = T0 + 1000 * S
    c = case(status="reopened")
    c.clock_started_at = reopened
    got = changes_for(c, NEW)
    assert got["ack_due"][1] == reopened + 10 * S
    assert got["resolve_due"][1] == reopened + 300 * S


def test_digest_follows_the_sla_table_only() -> None:
    assert sla_digest(OLD) == sla_digest(replace(OLD, headquarters="HQ"))
    assert sla_digest(OLD) != sla_digest(NEW)


def _agg_with(c: Case):
    agg = aggregate(exists=True)
    agg.cases[c.case_id] = c
    return agg


def test_command_applies_the_new_deadlines_with_a_timeline_step() -> None:
    c = case()
    env = envelope(RECOMPUTE, command_data(c, NEW), source="garda/repolicy")
    result = handle(_agg_with(c), env, NEW, T0 + 5 * S)
    got = result.aggregate.cases["CASE-1"]
    assert (got.ack_due, got.resolve_due) == (T0 + 10 * S, T0 + 300 * S)
    assert result.outcome == "recomputed"
    [step] = result.effects.timeline
    assert step.type == "garda.case.updated"
    assert step.detail == {
        "reason": "policy changed",
        "ack_due_from": iso(T0 + 20 * S),
        "ack_due": iso(T0 + 10 * S),
        "resolve_due_from": iso(T0 + 600 * S),
        "resolve_due": iso(T0 + 300 * S),
    }
    assert [e.type for e in result.effects.events][:1] == ["garda.case.updated"]
    # Applied again (a redelivery under another id): nothing more changes.
    again = handle(result.aggregate, env, NEW, T0 + 6 * S)
    assert again.outcome == "unchanged"
    assert again.effects.timeline == []


def test_command_from_another_policy_is_refused() -> None:
    c = case()
    env = envelope(RECOMPUTE, command_data(c, NEW))
    with pytest.raises(Rejected, match="another SLA policy"):
        handle(_agg_with(c), env, OLD, T0)


def test_unknown_case_is_refused() -> None:
    env = envelope(RECOMPUTE, {"case_id": "CASE-X", "sla": sla_digest(OLD)})
    with pytest.raises(Rejected, match="unknown case"):
        handle(_agg_with(case()), env, OLD, T0)


def test_plan_reports_a_level2_only_change_through_next_due() -> None:
    c = case()
    level2_only = replace(
        OLD, sla={**OLD.sla, "high": Sla(ack=20 * S, level2=30 * S, resolve=600 * S)}
    )
    # Past level 1: the next deadline is the ack clock's level 2, which moved from 60 s to 30 s.
    c.escalation_level = 1
    change = plan(c, T0 + 60 * S, level2_only)
    assert change is not None
    assert change.fields == {"next_due": (iso(T0 + 60 * S), iso(T0 + 30 * S))}
    assert plan(c, T0 + 30 * S, level2_only) is None
