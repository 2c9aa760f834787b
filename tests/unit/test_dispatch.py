"""dispatch.handle: the table, copying, worker snapshots, updated_at, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import Rejected, Unacceptable
from handlers import dispatch
from handlers.context import Ctx
from handlers.dispatch import HANDLERS, handle
from handlers.model import Aggregate, Result, stable_id
from schemas import topics
from tests.unit.factories import (
    POLICY,
    T0,
    WORKER,
    D,
    H,
    aggregate,
    departure,
    envelope,
    incident,
)

NOW = T0 + H
MINE = {
    "pmi.departure.recorded",
    "pmi.departure.failed",
    "pmi.arrival.reported",
    "pmi.contract.extended",
    "pmi.return.recorded",
    "pmi.incident.reported",
    "pmi.incident.updated",
}


def snapshots(result: Result) -> list:
    return [e for e in result.effects.events if e.topic == topics.WORKER_STATE]


def test_table_registers_departures_and_incidents() -> None:
    assert MINE <= set(HANDLERS)
    assert all(callable(f) for f in HANDLERS.values())


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(Rejected) as exc:
        handle(aggregate(), envelope("pmi.nothing.happened"), POLICY, NOW)
    assert "unknown event type" in exc.value.reason


def test_worker_mismatch_is_rejected() -> None:
    env = envelope("pmi.incident.reported", incident(), worker_id="PMI-OTHER")
    with pytest.raises(Rejected) as exc:
        handle(aggregate(), env, POLICY, NOW)
    assert isinstance(exc.value, Unacceptable)


def test_input_aggregate_is_not_mutated() -> None:
    agg = aggregate()
    before = agg.worker.to_doc()
    result = handle(agg, envelope("pmi.incident.reported", incident()), POLICY, NOW)
    assert agg.worker.to_doc() == before and agg.cases == {}
    assert result.aggregate is not agg and len(result.aggregate.cases) == 1


def test_rejection_leaves_aggregate_untouched() -> None:
    agg = aggregate(state="deceased", state_at=T0, exists=True)
    with pytest.raises(Rejected):
        handle(agg, envelope("pmi.arrival.reported", {"country": "MY",
               "reported_at": "2026-12-01T00:00:00Z"}), POLICY, NOW)  # fmt: skip
    assert agg.worker.state == "deceased"


def test_one_snapshot_last_with_final_state() -> None:
    result = handle(
        aggregate(), envelope("pmi.incident.reported", incident(category="death")), POLICY, NOW
    )
    (snap,) = snapshots(result)
    assert result.effects.events[-1] is snap
    assert snap.type == "garda.worker.state" and snap.key == WORKER
    assert snap.data == result.aggregate.worker_public()
    assert snap.data["state"] == "unregistered_abroad" and snap.data["in_crisis"] is True
    # The protection case, and a coverage gap (no membership on record) for the death.
    kinds = sorted(result.aggregate.cases[c].kind for c in snap.data["open_cases"])
    assert kinds == ["coverage_gap", "protection"]
    assert result.outcome == "opened"


def test_journey_change_snapshots() -> None:
    result = handle(aggregate(), envelope("pmi.departure.recorded", departure(T0)), POLICY, NOW)
    assert result.outcome == "departed"
    (snap,) = snapshots(result)
    assert snap.data["state"] == "departed" and snap.data["country"] == "MY"
    assert result.aggregate.worker.updated_at == T0


def test_no_change_no_snapshot() -> None:
    first = handle(aggregate(), envelope("pmi.incident.reported", incident()), POLICY, NOW)
    again = handle(
        first.aggregate, envelope("pmi.incident.reported", incident(), id="other"), POLICY, NOW
    )
    assert again.outcome == "duplicate-incident"
    assert again.effects.events == [] and again.effects.timeline == []
    assert again.aggregate.worker.updated_at == first.aggregate.worker.updated_at


def test_updated_at_never_moves_back() -> None:
    agg = aggregate()
    r1 = handle(agg, envelope("pmi.incident.reported", incident("A"), time=T0 + D), POLICY, T0 + D)
    r2 = handle(r1.aggregate, envelope("pmi.incident.reported", incident("B", "illness"), time=T0),
                POLICY, T0 + D)  # fmt: skip
    assert r2.outcome == "opened"
    assert r2.aggregate.worker.updated_at == T0 + D


def test_handler_snapshot_is_replaced_by_one_final(monkeypatch: pytest.MonkeyPatch) -> None:
    def noisy(agg: Aggregate, ctx: Ctx) -> None:
        ctx.worker_snapshot(agg)
        agg.worker.state = "placed"
        ctx.worker_snapshot(agg)
        ctx.outcome = "noisy"

    monkeypatch.setitem(dispatch.HANDLERS, "test.noisy", noisy)
    result = handle(aggregate(), envelope("test.noisy"), POLICY, NOW)
    (snap,) = snapshots(result)
    assert snap.data["state"] == "placed" and result.outcome == "noisy"


def test_replay_is_deterministic() -> None:
    env = envelope("pmi.incident.reported", incident(category="trafficking"), id="fixed")
    a = handle(aggregate(), env, POLICY, NOW)
    b = handle(aggregate(), env, POLICY, NOW + D)
    assert [e.id for e in a.effects.events] == [e.id for e in b.effects.events]
    assert [t.entry_id for t in a.effects.timeline] == [t.entry_id for t in b.effects.timeline]
    assert a.aggregate.cases.keys() == b.aggregate.cases.keys()


def test_event_time_is_capped_at_now() -> None:
    future = T0 + 10 * D
    r = handle(aggregate(), envelope("pmi.incident.reported", incident(), time=future), POLICY, NOW)
    (case,) = r.aggregate.cases.values()
    assert case.opened_at == NOW


def test_story_departure_incidents_update_return() -> None:
    agg = aggregate()
    steps = [
        ("pmi.departure.recorded", departure(T0), T0, "departed"),
        ("pmi.arrival.reported", {"country": "MY", "region": "MY-01",
                                  "reported_at": "2026-11-30T02:00:00Z"}, T0 + D, "placed"),
        ("pmi.incident.reported", incident("I1", "unpaid_wages"), T0 + 2 * D, "opened"),
        ("pmi.incident.reported", incident("I2", "unpaid_wages", severity="critical"),
         T0 + 3 * D, "attached"),
        ("pmi.incident.updated", {"incident_id": "I1", "note": "paid half"}, T0 + 4 * D, "updated"),
        ("pmi.contract.extended", {"contract_end": "2029-12-31"}, T0 + 5 * D, "extended"),
        ("pmi.return.recorded", {"returned_at": "2027-01-01T00:00:00Z",
                                 "reason": "repatriated"}, T0 + 40 * D, "returned"),
    ]  # fmt: skip
    for type_, data, time, outcome in steps:
        r = handle(agg, envelope(type_, data, time=time), POLICY, time + H)
        assert r.outcome == outcome, type_
        assert len(snapshots(r)) == 1, type_
        agg = r.aggregate
    case, reintegration = sorted(agg.cases.values(), key=lambda c: c.kind != "protection")
    assert reintegration.kind == "reintegration"  # repatriated: a case at the origin's unit
    assert case.post_id == "KJRI-JOHOR-BAHRU" and case.reports == 2
    assert case.severity == "critical" and case.incident_ids == ["I1", "I2"]
    assert agg.worker.state == "returned" and agg.worker_public()["in_crisis"] is True


def _containers(obj: object, path: str = "agg") -> dict[int, str]:
    """id -> path of every mutable container and dataclass reachable from ``obj``."""
    import dataclasses

    out: dict[int, str] = {}
    if dataclasses.is_dataclass(obj):
        out[id(obj)] = path
        for f in dataclasses.fields(obj):
            out.update(_containers(getattr(obj, f.name), f"{path}.{f.name}"))
    elif isinstance(obj, dict):
        out[id(obj)] = path
        for k, v in obj.items():
            out.update(_containers(v, f"{path}[{k!r}]"))
    elif isinstance(obj, list | set):
        out[id(obj)] = path
        for i, v in enumerate(obj):
            out.update(_containers(v, f"{path}[{i}]"))
    return out


def test_clone_is_equal_and_shares_no_mutable_part() -> None:
    agg = aggregate(state="placed", state_at=T0, exists=True)
    agg = handle(agg, envelope("pmi.incident.reported", incident()), POLICY, NOW).aggregate
    case = next(iter(agg.cases.values()))
    case.detail = {"reasons": ["a", {"nested": [1, 2]}], "tags": {"x"}, "pair": (1, [2])}
    agg.worker.non_procedural_reasons.append("visa")
    clone = dispatch._clone(agg)
    assert clone == agg
    shared = set(_containers(agg)) & set(_containers(clone))
    assert not shared, [_containers(agg)[i] for i in shared]
    clone.cases[case.case_id].detail["reasons"][1]["nested"].append(3)
    clone.worker.non_procedural_reasons.clear()
    assert case.detail["reasons"][1]["nested"] == [1, 2]
    assert agg.worker.non_procedural_reasons == ["visa"]


def test_a_raising_handler_leaves_every_nested_part_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agg = aggregate(state="placed", state_at=T0, exists=True)
    agg = handle(agg, envelope("pmi.incident.reported", incident()), POLICY, NOW).aggregate
    before = dispatch._clone(agg)

    def vandal(a: Aggregate, ctx: Ctx) -> None:
        c = next(iter(a.cases.values()))
        c.incident_ids.append("forged")
        c.detail["x"] = 1
        a.worker.anomalies.append("forged")
        raise RuntimeError("handler bug")

    monkeypatch.setitem(HANDLERS, "pmi.incident.updated", vandal)
    with pytest.raises(RuntimeError):
        handle(agg, envelope("pmi.incident.updated", incident()), POLICY, NOW)
    assert agg == before


_ID_TEXT = st.text(alphabet=st.sampled_from("ab-/:\x1e\x1f\u00e9\ud800"), max_size=6)


@given(source=_ID_TEXT, id_=_ID_TEXT, labels=st.lists(_ID_TEXT, max_size=4))
def test_derive_id_is_the_stable_id_of_the_event(source: str, id_: str, labels: list[str]) -> None:
    # Ctx.derive_id joins the source and id once and hashes the text itself when no part
    # holds the separator or the escape; any part may (and a surrogate): the same id
    ctx = Ctx(
        envelope("pmi.incident.reported", {}, source=source or "s", id=id_ or "i"), POLICY, NOW
    )
    env = ctx.envelope
    for _ in range(2):  # the joined head is remembered after the first call
        assert ctx.derive_id(*labels) == stable_id(env.source, env.id, *labels)
