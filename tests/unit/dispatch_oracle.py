"""The rules' entry point as it was before the per-event cost was cut (a test oracle, not
product code).

``handle`` deep-copies the whole aggregate with a generic walk, compares the worker, cases
and claims with the dataclasses' ``==``, tags new cases and filters snapshots without the
shortcuts, derives the context's times on every read (``OracleCtx``) and writes the worker
snapshot with ``schemas.fields.iso``. ``tests/unit/test_dispatch_oracle.py`` holds
``handlers.dispatch.handle`` to it: same results, same errors, the input untouched.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import date, datetime, timedelta
from typing import Any

from errors import Unacceptable
from handlers import agencies, employers
from handlers.context import Ctx
from handlers.dispatch import HANDLERS
from handlers.model import Aggregate, OutputEvent, Result
from handlers.policy import Policy
from schemas import topics
from schemas.envelope import Envelope
from schemas.fields import iso

_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes, datetime, date, timedelta})


def _copy(value: Any) -> Any:
    t = type(value)
    if t in _IMMUTABLE:
        return value
    if t is list:
        return [_copy(v) for v in value]
    if t is dict:
        return {k: _copy(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and hasattr(value, "__dict__"):
        obj = object.__new__(t)
        obj.__dict__.update({k: _copy(v) for k, v in value.__dict__.items()})
        return obj
    if t is tuple:
        return tuple(_copy(v) for v in value)
    if t is set:
        return {_copy(v) for v in value}
    return copy.deepcopy(value)


def _changed(before: Aggregate, after: Aggregate) -> bool:
    if before.cases != after.cases or before.claims != after.claims:
        return True
    stamp = after.worker.updated_at
    after.worker.updated_at = before.worker.updated_at
    try:
        return before.worker != after.worker
    finally:
        after.worker.updated_at = stamp


def worker_public(agg: Aggregate) -> dict[str, Any]:
    w = agg.worker
    return {
        "worker_id": w.worker_id,
        "state": w.state,
        "in_crisis": agg.in_crisis(),
        "non_procedural": w.non_procedural,
        "non_procedural_reasons": list(w.non_procedural_reasons),
        "insured_until": iso(w.insured_until),
        "open_cases": [c.case_id for c in agg.open_cases()],
        "country": w.country,
        "region": w.region,
    }


class OracleCtx(Ctx):
    """``Ctx`` with its times derived on every read, as before."""

    def __post_init__(self) -> None:
        pass

    @property  # type: ignore[override]
    def received(self) -> datetime:
        return min(self.received_at, self.now) if self.received_at is not None else self.now

    @property  # type: ignore[override]
    def late_report(self) -> bool:
        t = self.envelope.time
        return t is not None and t < self.received - self.policy.intake.max_event_age

    @property  # type: ignore[override]
    def event_time(self) -> datetime:
        t = self.envelope.time
        if t is None:
            return self.now
        if self.late_report:
            return self.received
        return min(t, self.now)

    def worker_snapshot(self, agg: Aggregate) -> None:
        w = agg.worker
        self.effects.events.append(
            OutputEvent(
                topic=topics.WORKER_STATE,
                type="garda.worker.state",
                key=w.worker_id,
                data=worker_public(agg),
                id=self.derive_id("worker-state"),
                subject=w.worker_id,
            )
        )


def handle(
    agg: Aggregate,
    envelope: Envelope,
    policy: Policy,
    now: datetime,
    *,
    received_at: datetime | None = None,
    watchlisted: frozenset[str] = frozenset(),
) -> Result:
    handler = HANDLERS.get(envelope.type)
    if handler is None:
        raise Unacceptable(f"unknown event type {envelope.type!r}")
    worker_id = envelope.data.get("worker_id")
    if worker_id is not None and worker_id != agg.worker.worker_id:
        raise Unacceptable(
            f"data.worker_id {worker_id!r} is not the aggregate's worker {agg.worker.worker_id!r}"
        )
    before = agg
    agg = _copy(agg)
    ctx = OracleCtx(
        envelope=envelope, policy=policy, now=now, received_at=received_at, watchlisted=watchlisted
    )
    handler(agg, ctx)
    employers.tag_new_cases(before, agg)
    agencies.tag_new_cases(before, agg)
    events = ctx.effects.events
    events[:] = [e for e in events if e.topic != topics.WORKER_STATE]
    if _changed(before, agg):
        w = agg.worker
        w.updated_at = max(w.updated_at or ctx.event_time, ctx.event_time)
        ctx.worker_snapshot(agg)
    return Result(aggregate=agg, effects=ctx.effects, outcome=ctx.outcome)
