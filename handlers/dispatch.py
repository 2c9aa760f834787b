"""The one entry point of the rules: ``handle(agg, envelope, policy, now) -> Result``. Pure.

``HANDLERS`` maps each input event type to the function that applies it to a worker's
aggregate through a ``Ctx``. Add one line per type; the module imports stay at the top.

``handle``:
- works on a deep copy (the caller's aggregate is untouched, also when a handler raises);
  the copy shares only immutable values (strings, numbers, datetimes) with the original:
  a dataclass field declared with immutable types only is shared as it is, without a look
  at its value (the rules assign the declared types; see ``_copy``);
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
import re
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
from handlers.model import Aggregate, Effects, Result
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
# The names an annotation may use for a value that is immutable.
_IMMUTABLE_NAMES = frozenset(
    {"str", "int", "float", "bool", "None", "bytes", "datetime", "date", "timedelta"}
)
_CONTAINER = re.compile(r"(list|dict|set)\[([^\[\]]*)\]")
_SHARE, _SHALLOW, _DEEP = 0, 1, 2
_CONTAINERS = frozenset({list, dict, set})
# dataclass type -> (field, how to copy it) of the fields not shared; None: not a dataclass
# with a __dict__ (copied by ``copy.deepcopy``).
_PLANS: dict[type, tuple[tuple[str, int], ...] | None] = {}
_new = object.__new__


def _how(annotation: object) -> int:
    """How a field declared ``annotation`` is copied: shared (a union of immutable types:
    ``str | None``, ``datetime``...), a shallow copy of its container (a list, dict or set of
    immutable types: ``list[str]``, ``dict[str, str] | None``), else a deep copy."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = [p.strip() for p in text.split("|")] if text else ["?"]
    if all(p in _IMMUTABLE_NAMES for p in parts):
        return _SHARE
    containers = [p for p in parts if p != "None"]
    if len(containers) == 1 and (m := _CONTAINER.fullmatch(containers[0])):
        if all(arg.strip() in _IMMUTABLE_NAMES for arg in m.group(2).split(",")):
            return _SHALLOW
    return _DEEP


def _plan(t: type) -> tuple[tuple[str, int], ...] | None:
    if t not in _PLANS:
        if dataclasses.is_dataclass(t) and "__slots__" not in t.__dict__:
            fields = ((f.name, _how(f.type)) for f in dataclasses.fields(t))
            _PLANS[t] = tuple((name, how) for name, how in fields if how != _SHARE)
        else:
            _PLANS[t] = None
    return _PLANS[t]


def _copy(value: Any) -> Any:
    """A deep copy of the model's values: immutable leaves are shared, every list, dict,
    set, tuple and dataclass is new; any other type goes through ``copy.deepcopy``.

    A dataclass is copied by its declared field types (``_how``): a field of immutable
    types is shared without looking at its value, a ``list[str]`` is copied shallowly. The
    rules assign only values of the declared types (mypy strict), and ``from_doc`` reads
    what ``to_doc`` wrote. Loops, not comprehensions: a comprehension is a function call
    (Python 3.11), and most containers here are small. Leaves are tested inline."""
    t = type(value)
    if t in _IMMUTABLE:
        return value
    if t is dict:
        out = value.copy()
        for k, v in value.items():
            if type(v) not in _IMMUTABLE:
                out[k] = _copy(v)
        return out
    if t is list:
        out = value.copy()
        for i, v in enumerate(value):
            if type(v) not in _IMMUTABLE:
                out[i] = _copy(v)
        return out
    plan = _PLANS[t] if t in _PLANS else _plan(t)
    if plan is not None:
        values = value.__dict__.copy()
        for name, how in plan:
            v = values.get(name)
            tv = type(v)
            if tv in _IMMUTABLE:
                continue
            if tv in _CONTAINERS and (how == _SHALLOW or not v):
                values[name] = v.copy()  # of immutable values, or empty
            elif tv is dict:  # as _copy does, without a call (a case's detail, cases)
                out = v.copy()
                for k, x in v.items():
                    if type(x) not in _IMMUTABLE:
                        out[k] = _copy(x)
                values[name] = out
            else:
                values[name] = _copy(v)
        obj = _new(t)
        obj.__dict__ = values
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


def _same_values(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """The two dicts of cases (or claims) are equal, as ``==`` of the dataclasses says,
    compared by each one's ``__dict__`` in C (one comparison instead of two tuples of every
    field); the copy shares the unchanged leaves, so most values compare by identity."""
    if before.keys() != after.keys():
        return False
    for key, b in before.items():
        a = after[key]
        if a is not b and (type(a) is not type(b) or a.__dict__ != b.__dict__):
            return False
    return True


def _changed(before: Aggregate, after: Aggregate) -> bool:
    """Did the handler change the worker (``updated_at`` aside), a case or a claim?"""
    if (before.cases or after.cases) and not _same_values(before.cases, after.cases):
        return True
    if (before.claims or after.claims) and not _same_values(before.claims, after.claims):
        return True
    w0, w1 = before.worker, after.worker
    if type(w0) is not type(w1):
        return True
    stamp = w1.updated_at
    w1.updated_at = w0.updated_at  # compare all but the timestamp
    try:
        return bool(w0.__dict__ != w1.__dict__)
    finally:
        w1.updated_at = stamp


def handle(
    agg: Aggregate,
    envelope: Envelope,
    policy: Policy,
    now: datetime,
    *,
    received_at: datetime | None = None,
    watchlisted: frozenset[str] = frozenset(),
    outputs: bool = True,
) -> Result:
    """Apply one event to (a copy of) ``agg``. ``outputs=False``: the case and worker-state
    output events are not built (``handlers.context.Ctx.outputs``); everything else is the
    same."""
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
    # envelope, policy, now, effects, outcome, received_at, watchlisted (positional: keywords
    # cost ~0.15 µs a call)
    ctx = Ctx(envelope, policy, now, Effects(), "ignored", received_at, watchlisted, outputs)
    handler(agg, ctx)
    if agg.cases.keys() != before.cases.keys():  # cases never go: some opened
        employers.tag_new_cases(before, agg)  # a new protection case joins the employer
        agencies.tag_new_cases(before, agg)  # and a new case the journey's placement agency
    events = ctx.effects.events
    for e in events:  # a handler's own snapshot (rare) is replaced by the final one
        if e.topic == topics.WORKER_STATE:
            events[:] = [e for e in events if e.topic != topics.WORKER_STATE]
            break
    if _changed(before, agg):
        w = agg.worker
        w.updated_at = max(w.updated_at or ctx.event_time, ctx.event_time)
        ctx.worker_snapshot(agg)
    return Result(agg, ctx.effects, ctx.outcome)
