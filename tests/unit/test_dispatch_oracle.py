"""``handlers.dispatch.handle`` against the copy-based oracle (``dispatch_oracle``): the
simulator's traffic, with responders' actions and deadline commands on the cases it opens,
gives the same ``Result`` (aggregate, effects, outcome) or the same error, event by event,
and leaves the input aggregate as it was."""

from __future__ import annotations

import dataclasses
import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import GardaError
from handlers.dispatch import handle
from handlers.employers import employer_key
from handlers.model import Aggregate, Worker, iso
from infra.simulate import traffic
from schemas.envelope import Envelope, decode
from schemas.fields import format_datetime
from tests.unit import dispatch_oracle
from tests.unit.factories import POLICY

ACTIONS = (
    "pmi.case.acknowledged",
    "pmi.case.note-added",
    "pmi.case.referred",
    "pmi.case.resolved",
    "pmi.case.reopened",
)


def _state(agg: Aggregate) -> Any:
    """Everything in ``agg`` as plain data (to see that the input did not change)."""

    def walk(x: Any) -> Any:
        if dataclasses.is_dataclass(x):
            return (type(x).__name__, {k: walk(v) for k, v in vars(x).items()})
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [walk(v) for v in x]
        return x

    return walk(agg)


def _follow_up(rnd: random.Random, agg: Aggregate, env: Envelope, n: int) -> Envelope | None:
    """A responder's action or a deadline command on one of the worker's cases."""
    if not agg.cases or rnd.random() > 0.4:
        return None
    case = agg.cases[rnd.choice(sorted(agg.cases))]
    at = (env.time or datetime(2026, 1, 1, tzinfo=UTC)) + timedelta(minutes=rnd.randint(1, 600))
    if rnd.random() < 0.2:
        type_ = "garda.deadline.due"
        data: dict[str, Any] = {
            "case_id": case.case_id,
            "worker_id": case.worker_id,
            "deadline": rnd.choice(["ack", "resolve"]),
            "level": rnd.choice([1, 2]),
        }
    else:
        type_ = rnd.choice(ACTIONS)
        data = {
            "case_id": case.case_id,
            "worker_id": case.worker_id,
            "actor": "officer-1",
            "post_id": rnd.choice([case.post_id, POLICY.headquarters]),
            "at": iso(at),
            "note": "seen",
            "resolution": "settled",
            "to": rnd.choice(["ngo-1", "police"]),
            "substantiated": rnd.random() < 0.7,
        }
    return Envelope(
        id=f"follow-{n}",
        source="desk/test",
        type=type_,
        subject=case.worker_id,
        data=data,
        time=at,
    )


def _same_as_oracle(seed: int, n: int, late_every: int, now_shift: timedelta) -> int:
    """Run ``n`` events of the simulator (plus follow-ups) through both; returns how many
    results were compared."""
    rnd = random.Random(seed)
    envs = [decode(k.encode(), v, [], topic=t) for t, k, v in itertools.islice(traffic(seed), n)]
    keys = {
        employer_key(e.data.get("employer_name"), e.data.get("destination_country"))
        for e in envs
        if e.type == "pmi.departure.recorded"
    }
    watchlisted = frozenset(k for k in sorted(keys, key=str)[::3] if k)
    aggs: dict[str, Aggregate] = {}
    compared = 0
    i = 0
    queue = list(envs)
    while queue:
        env = queue.pop(0)
        i += 1
        agg = aggs.get(env.subject) or Aggregate(Worker(env.subject))
        state = _state(agg)
        now = (env.time or datetime(2026, 1, 1, tzinfo=UTC)) + now_shift
        received_at = now + timedelta(days=40) if late_every and i % late_every == 0 else None
        if received_at is not None:
            now = received_at
        kwargs = {"received_at": received_at, "watchlisted": watchlisted}
        try:
            expected = dispatch_oracle.handle(agg, env, POLICY, now, **kwargs)
        except GardaError as exc:
            with pytest.raises(type(exc)) as got:
                handle(agg, env, POLICY, now, **kwargs)
            assert str(got.value) == str(exc)
            assert _state(agg) == state
            continue
        result = handle(agg, env, POLICY, now, **kwargs)
        assert _state(agg) == state, env
        assert result.outcome == expected.outcome, env
        assert result.effects == expected.effects, env
        assert result.aggregate == expected.aggregate, env
        assert _state(result.aggregate) == _state(expected.aggregate), env
        aggs[env.subject] = result.aggregate
        compared += 1
        follow = _follow_up(rnd, result.aggregate, env, i)
        if follow is not None:
            queue.insert(rnd.randint(0, min(len(queue), 20)), follow)
    return compared


@pytest.mark.parametrize("seed", [1, 2])
def test_simulated_traffic_gives_the_oracles_results(seed: int) -> None:
    assert _same_as_oracle(seed, 800, late_every=0, now_shift=timedelta(hours=1)) > 800


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(3, 10_000),
    late_every=st.sampled_from([0, 7, 29]),
    now_shift=st.sampled_from([timedelta(0), timedelta(hours=2), timedelta(days=20)]),
)
def test_any_seed_clock_and_late_reports_give_the_oracles_results(
    seed: int, late_every: int, now_shift: timedelta
) -> None:
    assert _same_as_oracle(seed, 250, late_every, now_shift) > 0


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    )
    | st.datetimes(timezones=st.just(UTC))
)
def test_iso_writes_what_the_utc_conversion_writes(dt: datetime) -> None:
    # iso's fast path for a UTC datetime against the general conversion it skips, first
    # written and then from its cache (also for an equal instant held in another zone)
    expected = format_datetime(dt.astimezone(UTC))
    assert iso(dt) == expected
    assert iso(dt.astimezone(UTC)) == expected
    assert iso(dt.astimezone(UTC)) == expected
    assert iso(dt) == expected
