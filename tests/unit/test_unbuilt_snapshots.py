"""``handle(..., outputs=False)`` (what ``garda rebuild`` runs without ``--republish``): the
worker-state snapshots that surely fit in a record are not built; every other effect, the
aggregate, the outcome and the alerts' ids are what ``outputs=True`` gives."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import GardaError
from handlers import context
from handlers.context import snapshot_surely_fits
from handlers.dispatch import handle
from handlers.model import Aggregate, Case, OutputEvent, Worker
from infra.simulate import traffic
from infra.store import MAX_RECORD_BYTES
from schemas import topics
from schemas.envelope import decode
from streams.rebuild import _surely_fits
from tests.unit.factories import POLICY, T0, envelope
from tests.unit.test_dispatch_oracle import _follow_up


def _without_fitting_snapshots(events: list[OutputEvent], agg: Aggregate) -> list[OutputEvent]:
    if snapshot_surely_fits(agg):
        return [e for e in events if e.topic != topics.WORKER_STATE]
    return events


def test_the_limit_is_the_rebuilds_record_check() -> None:
    assert context._SNAPSHOT_LIMIT == (MAX_RECORD_BYTES - 8192) // 6


def test_simulated_traffic_gives_the_same_effects_less_the_snapshots() -> None:
    rnd = random.Random(11)
    envs = [decode(k.encode(), v, [], topic=t) for t, k, v in itertools.islice(traffic(11), 1500)]
    aggs: dict[str, Aggregate] = {}
    skipped = alerts = 0
    queue = list(envs)
    i = 0
    while queue:
        env = queue.pop(0)
        i += 1
        agg = aggs.get(env.subject) or Aggregate(Worker(env.subject))
        now = (env.time or datetime(2026, 1, 1, tzinfo=UTC)) + timedelta(hours=1)
        try:
            full = handle(agg, env, POLICY, now)
        except GardaError as exc:
            try:
                handle(agg, env, POLICY, now, outputs=False)
            except GardaError as lean_exc:
                assert str(lean_exc) == str(exc)
                continue
            raise AssertionError(f"outputs=False took what outputs=True refused: {env}") from exc
        lean = handle(agg, env, POLICY, now, outputs=False)
        assert lean.outcome == full.outcome
        assert lean.aggregate == full.aggregate
        assert lean.effects.timeline == full.effects.timeline
        expected = _without_fitting_snapshots(full.effects.events, full.aggregate)
        assert lean.effects.events == expected, env
        skipped += len(full.effects.events) - len(lean.effects.events)
        alerts += sum(e.topic == topics.ALERTS for e in lean.effects.events)
        aggs[env.subject] = full.aggregate
        follow = _follow_up(rnd, full.aggregate, env, i)
        if follow is not None:
            queue.insert(rnd.randint(0, min(len(queue), 20)), follow)
    assert skipped > 1000  # most events change their worker
    assert alerts > 0  # their ids are compared above, after skipped snapshots


def _aggregate(worker_id: str, region: str, reasons: list[str], cases: int) -> Aggregate:
    agg = Aggregate(
        Worker(worker_id, state="placed", country="MY", region=region, non_procedural=True)
    )
    agg.worker.non_procedural_reasons = reasons
    for n in range(cases):
        cid = f"CASE-{n:06d}"
        agg.cases[cid] = Case(cid, worker_id, "protection", "abuse", "high", "MY-KL", T0)
    return agg


_text = st.text(alphabet=st.sampled_from('a\x01"\\é\U0001f600'), max_size=300)


@settings(deadline=None)  # an example builds up to 30,000 cases: no timed limit on a shared machine
@given(
    worker_id=_text.filter(bool),
    region=_text,
    reasons=st.lists(_text, max_size=40),
    cases=st.sampled_from([0, 3, 500, 8_000, 30_000]),
)
def test_a_snapshot_said_to_fit_passes_the_rebuilds_record_check(
    worker_id: str, region: str, reasons: list[str], cases: int
) -> None:
    agg = _aggregate(worker_id, region, reasons, cases)
    if not snapshot_surely_fits(agg):
        assert cases >= 500  # only a worker with many cases (or huge texts) is built
        return
    data = agg.worker_public()
    ev = OutputEvent(topics.WORKER_STATE, "garda.worker.state", worker_id, data, "0" * 16)
    assert _surely_fits(ev)
    assert len(orjson.dumps(data)) < context._SNAPSHOT_LIMIT


def test_a_worker_with_very_many_cases_still_gets_its_snapshot_built() -> None:
    agg = _aggregate("PMI-1", "Kuala Lumpur", [], 30_000)
    assert not snapshot_surely_fits(agg)
    lean = context.Ctx(envelope("pmi.incident.reported"), POLICY, T0, outputs=False)
    lean.worker_snapshot(agg)
    assert [e.type for e in lean.effects.events] == ["garda.worker.state"]
    small = _aggregate("PMI-1", "Kuala Lumpur", [], 3)
    lean.worker_snapshot(small)  # counted, not built
    lean.alert("test", "PMI-1", {})
    full = context.Ctx(lean.envelope, POLICY, T0)
    full.worker_snapshot(agg)
    full.worker_snapshot(small)
    full.alert("test", "PMI-1", {})
    assert lean.effects.events[-1] == full.effects.events[-1]  # the alert's id counts it
