"""The one entry point of the rules: ``handle(agg, envelope, policy, now) -> Result``. Pure.

``HANDLERS`` maps each input event type to the function that applies it to a worker's
aggregate through a ``Ctx``. Add one line per type; the module imports stay at the top.

``handle``:
- works on a deep copy (the caller's aggregate is untouched, also when a handler raises);
  the copy shares only immutable values (strings, numbers, datetimes) with the original;
- refuses an unknown type, and an event whose ``data.worker_id`` is not the aggregate's
  worker (``Unacceptable``: the processor sends both to the dead-letter topic);
- after the handler, when the worker or any case changed: sets ``worker.updated_at`` (the
  event time, never moving back) and leaves exactly one worker snapshot
  (``garda.worker.state``) in the effects, last, with the final state (a snapshot a handler
  emitted itself is replaced);
- ``received_at`` (the Kafka record timestamp) is when Garda learned of the event: a late
  report's clocks start then (``Ctx.event_time``), and case actions are dated against it;
- ``watchlisted``: the employer keys on the watchlist (``handlers.employers``), loaded by
  the processor; a protection case the event opens is linked to the worker's employer;
- returns ``Result(aggregate, effects, outcome)``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from errors import Unacceptable
from handlers import (
    actions,
    agencies,
    claims,
    employers,
    escalation,
    incidents,
    journey,
    referrals,
    reintegration,
    repolicy,
)
from handlers.context import Ctx
from handlers.model import Aggregate, Result
from handlers.policy import Policy
from schemas import topics
from schemas.envelope import Envelope

Handler = Callable[[Aggregate, Ctx], None]

HANDLERS: dict[str, Handler] = {
    **journey.JOURNEY_HANDLERS,
    **incidents.INCIDENT_HANDLERS,
    **actions.ACTION_HANDLERS,
    **claims.CLAIM_HANDLERS,
    **escalation.DEADLINE_HANDLERS,
    **repolicy.REPOLICY_HANDLERS,
    # prevention and aftercare
    **referrals.REFERRAL_HANDLERS,
    **reintegration.REINTEGRATION_HANDLERS,
}


_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes, datetime, date, timedelta})
_DATACLASSES: set[type] = set()  # dataclass types with a __dict__ seen so far
_new = object.__new__


def _copy(value: Any) -> Any:
    """A deep copy of the model's values: immutable leaves are shared, every list, dict,
    set, tuple and dataclass is new. About twice as fast as a pickle round trip (which
    copied the immutable leaves too); any other type goes through ``copy.deepcopy``.
    The leaves are tested inline (one type lookup each, no call): most values are."""
    t = type(value)
    if t in _IMMUTABLE:
        return value
    if t is list:
        return [v if type(v) in _IMMUTABLE else _copy(v) for v in value]
    if t is dict:
        return {k: v if type(v) in _IMMUTABLE else _copy(v) for k, v in value.items()}
    if t in _DATACLASSES or (dataclasses.is_dataclass(value) and hasattr(value, "__dict__")):
        _DATACLASSES.add(t)
        obj = _new(t)
        obj.__dict__.update(
            {k: v if type(v) in _IMMUTABLE else _copy(v) for k, v in value.__dict__.items()}
        )
        return obj
    if t is tuple:
        return tuple(_copy(v) for v in value)
    if t is set:
        return {_copy(v) for v in value}
    return copy.deepcopy(value)


def _clone(agg: Aggregate) -> Aggregate:
    """An independent copy the handler may change (shares only immutable values)."""
    clone: Aggregate = _copy(agg)
    return clone


def _changed(before: Aggregate, after: Aggregate) -> bool:
    """Did the handler change the worker (``updated_at`` aside), a case or a claim?"""
    if before.cases != after.cases or before.claims != after.claims:
        return True
    stamp = after.worker.updated_at
    after.worker.updated_at = before.worker.updated_at  # compare all but the timestamp
    try:
        return before.worker != after.worker
    finally:
        after.worker.updated_at = stamp


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
    agg = _clone(agg)
    ctx = Ctx(
        envelope=envelope, policy=policy, now=now, received_at=received_at, watchlisted=watchlisted
    )
    handler(agg, ctx)
    employers.tag_new_cases(before, agg)  # a new protection case joins the worker's employer
    agencies.tag_new_cases(before, agg)  # and a new case the journey's placement agency
    events = ctx.effects.events
    events[:] = [e for e in events if e.topic != topics.WORKER_STATE]
    if _changed(before, agg):
        w = agg.worker
        w.updated_at = max(w.updated_at or ctx.event_time, ctx.event_time)
        ctx.worker_snapshot(agg)
    return Result(aggregate=agg, effects=ctx.effects, outcome=ctx.outcome)
