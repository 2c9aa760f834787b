"""Responders' case actions (design §2 ``pmi.case-actions.v1``, §4 "Case actions"). Pure, no I/O.

Every action carries ``case_id``, ``worker_id``, ``actor`` (officer id), ``post_id`` and
optionally ``at``; plus ``note`` (note-added, resolved), ``resolution`` (resolved) and ``to``
(referred).

Checks, in this order (the first failing one raises a ``Rejected`` subclass from ``errors``):

1. the case exists in the worker's aggregate, else ``NotFound`` (``unknown case``);
2. the acting post may act on it (``handlers.access.may_act``), else ``Forbidden``: the
   case's post, every post of the ladder it has reached (its head of mission from level 1
   on, level 2 included), and headquarters. (The API answers 404 for a foreign post's case,
   as for an unknown one.) A Kafka producer on pmi.case-actions.v1 declares ``post_id``
   itself: Kafka ACLs on that topic are the guard (docs/access.md); the API sets it from
   the token.
3. the action's time (``at``, else the envelope's ``time``) is not before the case opened and
   not more than ``intake.max_action_age`` (policy, default 1 d) before Garda received the
   action (its record timestamp), else ``Unacceptable``: a self-declared ``at`` cannot
   backdate an acknowledgement to 2000. It is then capped at ``ctx.now``.
4. the action is allowed in the case's status, else ``Conflict`` (x below):

   ============ ====== ============ ======== ========
   action       open   acknowledged reopened resolved
   ============ ====== ============ ======== ========
   acknowledge  yes    x            yes      x
   note         yes    yes          yes      yes
   refer        yes    yes          yes      x
   resolve      yes    yes          yes      x
   reopen       x      x            x        yes
   ============ ====== ============ ======== ========

   Referring a case to the organisation it is already referred to is also a ``Conflict``
   (same effect twice). A missing or blank ``note``/``resolution``/``to`` is ``Unacceptable``.

Effects: the case changes, then one timeline row and one ``garda.case.*`` event on
pmi.cases.v1 via ``ctx.case_event`` (actor = ``data.actor``, at = the action's time from
check 3): ``garda.case.acknowledged``, ``.referred``,
``.resolved``, ``.reopened``; a note is recorded as ``garda.case.note-added``, which the
design's list of output types does not name but which is published on pmi.cases.v1 too
(``ctx.case_event`` publishes every ``garda.case.*`` step), so consumers see notes.
Resolving and reopening change the worker's open cases, so they also publish a worker
snapshot. Reopening restarts the clocks from ``ctx.event_time`` (see ``handlers.escalation``):
new ``ack_due``/``resolve_due`` via ``cases.deadlines``, ``opened_at`` and the escalation level
kept, ``acknowledged_at``/``resolved_at`` cleared (the timeline keeps the history).

Replays never reach the handlers twice (the database dedups by (source, id)); two different
events with the same effect (two acknowledges, two resolves, two reopens) are refused with
``Conflict`` by the status rules.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from errors import Conflict, Forbidden, Unacceptable
from handlers import referrals
from handlers.access import may_act
from handlers.cases import case_or_not_found, kind_deadlines
from handlers.context import Ctx
from handlers.model import Aggregate, Case, iso, parse_dt
from handlers.policy import format_duration

ACKNOWLEDGED = "pmi.case.acknowledged"
NOTE_ADDED = "pmi.case.note-added"
REFERRED = "pmi.case.referred"
RESOLVED = "pmi.case.resolved"
REOPENED = "pmi.case.reopened"

ACTIONABLE = ("open", "acknowledged", "reopened")  # refer / resolve
UNACKNOWLEDGED = ("open", "reopened")  # acknowledge


def _action_time(ctx: Ctx, case: Case, data: dict[str, Any]) -> datetime:
    """The action's time (``data.at``, else the envelope's ``time``), capped at ``ctx.now``;
    ``Unacceptable`` when it is before the case opened or older than
    ``intake.max_action_age`` when Garda received it."""
    at = data.get("at")
    if isinstance(at, str):
        at = parse_dt(at)
    if not isinstance(at, datetime):
        at = ctx.envelope.time
    if at is None:
        return ctx.event_time
    if at < case.opened_at:
        raise Unacceptable(
            f"action dated {iso(at)}, before case {case.case_id} opened ({iso(case.opened_at)})"
        )
    oldest = ctx.received - ctx.policy.intake.max_action_age
    if at < oldest:
        raise Unacceptable(
            f"action dated {iso(at)}, more than {format_duration(ctx.policy.intake.max_action_age)}"
            f" before Garda received it ({iso(ctx.received)})"
        )
    return min(at, ctx.now)


def _required_text(data: dict[str, Any], name: str, action: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise Unacceptable(f"{name} is required to {action} a case")
    return value


def _case_for(agg: Aggregate, ctx: Ctx) -> tuple[Case, dict[str, Any], datetime]:
    data = ctx.envelope.data
    case = case_or_not_found(agg, data.get("case_id"))
    post_id = data.get("post_id")
    if not may_act(case, post_id, ctx.policy):
        raise Forbidden(f"post {post_id!r} may not act on case {case.case_id}")
    return case, data, _action_time(ctx, case, data)


def _base_detail(data: dict[str, Any]) -> dict[str, Any]:
    return {"post_id": data.get("post_id")}


def handle_acknowledged(agg: Aggregate, ctx: Ctx) -> None:
    case, data, at = _case_for(agg, ctx)
    if case.status == "acknowledged":
        raise Conflict(f"case {case.case_id} is already acknowledged")
    if case.status not in UNACKNOWLEDGED:
        raise Conflict(f"case {case.case_id} is {case.status}; cannot acknowledge")
    case.status = "acknowledged"
    case.acknowledged_at = at
    case.updated_at = at
    ctx.case_event(
        case, "garda.case.acknowledged", actor=data.get("actor"), detail=_base_detail(data), at=at
    )
    ctx.outcome = "acknowledged"


def handle_note_added(agg: Aggregate, ctx: Ctx) -> None:
    case, data, at = _case_for(agg, ctx)
    note = _required_text(data, "note", "add a note to")
    case.updated_at = at
    detail = {**_base_detail(data), "note": note}
    ctx.case_event(case, "garda.case.note-added", actor=data.get("actor"), detail=detail, at=at)
    ctx.outcome = "noted"


def handle_referred(agg: Aggregate, ctx: Ctx) -> None:
    case, data, at = _case_for(agg, ctx)
    if case.status not in ACTIONABLE:
        raise Conflict(f"case {case.case_id} is {case.status}; cannot refer")
    to = _required_text(data, "to", "refer")
    if case.detail.get("referred_to") == to:
        raise Conflict(f"case {case.case_id} is already referred to {to!r}")
    case.detail["referred_to"] = to
    history = list(case.detail.get("referrals") or [])
    history.append({"to": to, "at": iso(at), "actor": data.get("actor")})
    case.detail["referrals"] = history
    referrals.start_clock(case, ctx, to=to, at=at, actor=data.get("actor"))
    case.updated_at = at
    detail = {**_base_detail(data), "to": to, "answer_due": case.detail["referral"]["due"]}
    ctx.case_event(case, "garda.case.referred", actor=data.get("actor"), detail=detail, at=at)
    ctx.outcome = "referred"


def handle_resolved(agg: Aggregate, ctx: Ctx) -> None:
    case, data, at = _case_for(agg, ctx)
    if case.status == "resolved":
        raise Conflict(f"case {case.case_id} is already resolved")
    if case.status not in ACTIONABLE:
        raise Conflict(f"case {case.case_id} is {case.status}; cannot resolve")
    resolution = _required_text(data, "resolution", "resolve")
    case.status = "resolved"
    case.resolved_at = at
    case.updated_at = at
    case.detail["resolution"] = resolution
    # Substantiated or not (absent: not said); the employer watchlist counts true only.
    case.detail["substantiated"] = data.get("substantiated")
    detail = {**_base_detail(data), "resolution": resolution}
    if data.get("substantiated") is not None:
        detail["substantiated"] = data["substantiated"]
    if data.get("note"):
        detail["note"] = data["note"]
    ctx.case_event(case, "garda.case.resolved", actor=data.get("actor"), detail=detail, at=at)
    ctx.worker_snapshot(agg)
    ctx.outcome = "resolved"


def handle_reopened(agg: Aggregate, ctx: Ctx) -> None:
    case, data, at = _case_for(agg, ctx)
    if case.status != "resolved":
        raise Conflict(f"case {case.case_id} is {case.status}, not resolved; cannot reopen")
    restart = ctx.event_time
    case.ack_due, case.resolve_due = kind_deadlines(ctx.policy, case.kind, case.severity, restart)
    case.status = "reopened"
    case.acknowledged_at = None
    case.resolved_at = None
    case.updated_at = at
    case.clock_started_at = restart
    case.resolve_deadline_missed = None
    case.detail.pop("resolution", None)
    case.detail.pop("substantiated", None)
    detail = {
        **_base_detail(data),
        "ack_due": iso(case.ack_due),
        "resolve_due": iso(case.resolve_due),
    }
    ctx.case_event(case, "garda.case.reopened", actor=data.get("actor"), detail=detail, at=at)
    ctx.worker_snapshot(agg)
    ctx.outcome = "reopened"


ACTION_HANDLERS: dict[str, Callable[[Aggregate, Ctx], None]] = {
    ACKNOWLEDGED: handle_acknowledged,
    NOTE_ADDED: handle_note_added,
    REFERRED: handle_referred,
    RESOLVED: handle_resolved,
    REOPENED: handle_reopened,
}
