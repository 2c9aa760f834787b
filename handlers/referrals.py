"""Referral clocks: a referral must be answered in time. Pure, no I/O.

A ``pmi.case.referred`` to an organisation (``handlers.actions.handle_referred``) starts a
clock through :func:`start_clock`: the organisation (or the post on its behalf) answers with
``pmi.case.referral-accepted`` or ``pmi.case.referral-declined`` (same fields as the other
case actions, plus an optional ``note``) before ``referral.due`` = referral time +
``referrals.answer_within.<severity>`` (policy). No answer by then: the timer sends
``garda.referral.due`` and :func:`handle_referral_due` escalates the case one level with the
reason "referral not accepted in time".

The current referral lives in ``case.detail["referral"]``: ``{to, at, due, actor, state}``
with ``state`` one of ``pending``, ``accepted``, ``declined``, ``lapsed``; every answer is
also appended to the referral's entry in ``case.detail["referrals"]`` (the history kept by
``handle_referred``).

Rules decided where the design is silent:
- Only a ``pending`` referral can be accepted or declined; anything else is ``Conflict``
  (no referral, already answered, lapsed). A lapsed referral may still be accepted: the
  organisation took it late. The escalation stays (a level reached never falls), and
  the timeline shows both.
- Accepting stops the clock. Declining stops it, clears ``referred_to`` (the post may refer
  again, to the same organisation too), and raises ``garda.alert.referral-declined`` to the
  case's post: the case is back on its queue (it never left its post; a referral does not
  move a case).
- Referring again while a referral is pending replaces it: the new organisation's clock
  starts, the old one stops (its history stays).
- The clock runs only while the case is open, and only for a referral made since the
  case's clock start: a referral left pending when the case was resolved does not fire
  after a reopen (re-refer to start a new clock).
- Exactly once per deadline: the command is re-checked against the case (the referral
  must still be pending with the same ``due``, and be due at ``ctx.now``); firing marks it
  ``lapsed``, so the processor's next deadline (``handlers.clocks``) no longer includes it,
  a replayed or duplicated command finds nothing pending and changes nothing, and the state
  is in PostgreSQL, so a restart neither loses nor repeats it.
- At level 2 (headquarters) there is no level above: the lapse is recorded
  (``garda.case.referral-lapsed``, ``garda.alert.referral-lapsed`` to the case's current
  level) without a level change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from errors import Conflict, Unacceptable
from handlers.cases import case_or_not_found, clock_start
from handlers.context import Ctx
from handlers.model import Aggregate, Case, iso, parse_dt
from handlers.routing import escalation_target

ACCEPTED = "pmi.case.referral-accepted"
DECLINED = "pmi.case.referral-declined"
DUE_COMMAND = "garda.referral.due"
REASON = "referral not accepted in time"
MAX_LEVEL = 2
REFERRAL = "referral"  # key in case.detail
PENDING, ANSWERED_ACCEPTED, ANSWERED_DECLINED, LAPSED = "pending", "accepted", "declined", "lapsed"


def start_clock(case: Case, ctx: Ctx, *, to: str, at: datetime, actor: str | None) -> None:
    """A referral to ``to`` at ``at``: its clock starts (replacing any pending one)."""
    due = at + ctx.policy.prevention.referrals.window(case.severity)
    case.detail[REFERRAL] = {
        "to": to,
        "at": iso(at),
        "due": iso(due),
        "actor": actor,
        "state": PENDING,
    }


def current(case: Case) -> dict[str, Any] | None:
    ref = case.detail.get(REFERRAL)
    return ref if isinstance(ref, dict) else None


def referral_due(case: Case) -> datetime | None:
    """When the case's pending referral lapses (None: no clock running)."""
    ref = current(case)
    if ref is None or ref.get("state") != PENDING or not case.is_open:
        return None
    at, due = parse_dt(ref.get("at")), parse_dt(ref.get("due"))
    if at is None or due is None or at < clock_start(case):
        return None
    return due if isinstance(due, datetime) else None


def due_commands(cases: Iterable[Case], now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    """``(type, command id, data)`` of every referral due at ``now`` (earliest first)."""
    out: list[tuple[datetime, str, str, dict[str, Any]]] = []
    for case in cases:
        due = referral_due(case)
        if due is None or due > now:
            continue
        data = {"case_id": case.case_id, "worker_id": case.worker_id, "due_at": iso(due)}
        out.append((due, case.case_id, f"referral:{case.case_id}:{iso(due)}", data))
    out.sort(key=lambda item: (item[0], item[1]))
    return [(DUE_COMMAND, cid, data) for _, _, cid, data in out]


def _record_answer(case: Case, state: str, at: datetime, actor: str | None) -> dict[str, Any]:
    ref = dict(current(case) or {})
    ref.update(state=state, answered_at=iso(at), answered_by=actor)
    case.detail[REFERRAL] = ref
    history = list(case.detail.get("referrals") or [])
    for entry in reversed(history):
        if entry.get("to") == ref.get("to") and entry.get("at") == ref.get("at"):
            entry.update(answer=state, answered_at=iso(at))
            break
    case.detail["referrals"] = history
    return ref


def _answerable(agg: Aggregate, ctx: Ctx, verb: str) -> tuple[Case, dict[str, Any], datetime]:
    from handlers.actions import _case_for  # the shared action checks (exists, may act, time)

    case, data, at = _case_for(agg, ctx)
    if not case.is_open:
        raise Conflict(f"case {case.case_id} is {case.status}; cannot {verb} a referral")
    ref = current(case)
    if ref is None:
        raise Conflict(f"case {case.case_id} has no referral to {verb}")
    if ref.get("state") not in (PENDING, LAPSED):
        raise Conflict(f"the referral of case {case.case_id} is already {ref.get('state')}")
    ref_at = parse_dt(ref.get("at"))
    if ref_at is not None and at < ref_at:
        raise Unacceptable(f"answer dated {iso(at)}, before the referral ({ref.get('at')})")
    return case, data, at


def handle_referral_accepted(agg: Aggregate, ctx: Ctx) -> None:
    case, data, at = _answerable(agg, ctx, "accept")
    late = current(case).get("state") == LAPSED  # type: ignore[union-attr]
    ref = _record_answer(case, ANSWERED_ACCEPTED, at, data.get("actor"))
    case.updated_at = at
    detail: dict[str, Any] = {"post_id": data.get("post_id"), "to": ref.get("to"), "late": late}
    if data.get("note"):
        detail["note"] = data["note"]
    ctx.case_event(
        case, "garda.case.referral-accepted", actor=data.get("actor"), detail=detail, at=at
    )
    ctx.outcome = "referral-accepted"


def handle_referral_declined(agg: Aggregate, ctx: Ctx) -> None:
    case, data, at = _answerable(agg, ctx, "decline")
    ref = _record_answer(case, ANSWERED_DECLINED, at, data.get("actor"))
    case.detail.pop("referred_to", None)
    case.updated_at = at
    detail: dict[str, Any] = {"post_id": data.get("post_id"), "to": ref.get("to")}
    if data.get("note"):
        detail["note"] = data["note"]
    ctx.case_event(
        case, "garda.case.referral-declined", actor=data.get("actor"), detail=detail, at=at
    )
    ctx.alert(
        "referral-declined",
        case.worker_id,
        {**detail, "post_id": case.post_id, "returned_to_queue": case.post_id},
        case=case,
    )
    ctx.outcome = "referral-declined"


def handle_referral_due(agg: Aggregate, ctx: Ctx) -> None:
    """Apply ``garda.referral.due``, or do nothing when it no longer holds."""
    data = ctx.envelope.data
    case = case_or_not_found(agg, data.get("case_id"))
    due = referral_due(case)
    if due is None or due > ctx.now or iso(due) != iso(parse_dt(data.get("due_at"))):
        ctx.outcome = "stale-deadline"
        return
    ref = dict(current(case) or {})
    ref["state"] = LAPSED
    ref["lapsed_at"] = iso(ctx.now)
    case.detail[REFERRAL] = ref
    case.updated_at = ctx.now
    detail: dict[str, Any] = {
        "reason": REASON,
        "deadline": "referral",
        "missed_deadline": iso(due),
        "to": ref.get("to"),
    }
    if case.escalation_level >= MAX_LEVEL:
        detail["level"] = case.escalation_level
        detail["escalated_to"] = escalation_target(ctx.policy, case.post_id, case.escalation_level)
        ctx.case_event(case, "garda.case.referral-lapsed", actor="garda", detail=detail, at=ctx.now)
        ctx.alert("referral-lapsed", case.worker_id, detail, case=case)
        ctx.outcome = "referral-lapsed"
        return
    level = case.escalation_level + 1
    target = escalation_target(ctx.policy, case.post_id, level)
    case.escalation_level = level
    case.escalated_to = target
    detail.update(level=level, escalated_to=target)
    ctx.case_event(case, "garda.case.escalated", actor="garda", detail=detail, at=ctx.now)
    ctx.alert("escalated", case.worker_id, detail, case=case)
    ctx.outcome = "escalated"


def pending_to(case: Case) -> str | None:
    """The organisation a pending referral waits on (None: none)."""
    ref = current(case)
    return ref.get("to") if ref is not None and ref.get("state") == PENDING else None


REFERRAL_HANDLERS: dict[str, Callable[[Aggregate, Ctx], None]] = {
    ACCEPTED: handle_referral_accepted,
    DECLINED: handle_referral_declined,
    DUE_COMMAND: handle_referral_due,
}
