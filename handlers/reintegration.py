"""Reintegration referrals: bring a returning worker home to their village's services.
Pure, no I/O.

Hooks (called by ``handlers.journey`` and ``handlers.dispatch``):
- :func:`remember_origin` after every departure: keeps ``origin`` (province, regency,
  village codes) on the worker.
- :func:`after_journey_change` after every accepted journey event: on a
  ``pmi.return.recorded`` that moved the worker to ``returned``/``deceased``, opens one
  ``reintegration`` case when the return's reason is in ``reintegration.reasons``
  (repatriated, deported, medical, deceased by default), or when the worker has an open
  ``protection`` case, or one resolved at most ``reintegration.protection_lookback`` (90 d)
  before the return.
- :func:`after_claim_filed` after every ``pmi.claim.filed``: a JKM claim is linked to the
  worker's open reintegration case that tracks one.

Routing (:func:`route_origin`): the origin's Desmigratif village programme
(province + regency + village match a ``desmigratif`` unit), else the regency's manpower
office (province + regency), else the province's office, else headquarters; the routing note
says which and why. Codes are compared trimmed; a unit's id is the case's ``post_id``. A
unit is not a mission abroad: the ladder takes its cases to headquarters at level 1 (the
routing rule for a post the policy does not list) and level 2.

Rules decided where the design is silent:
- One case per return: the cause is the return's ``returned_at``, so a replay or a re-sent
  return opens nothing twice; a worker with an open reintegration case gets no second one.
- Severity ``reintegration.severity`` (medium), ``reintegration.deceased_severity`` (high)
  for a death: the family needs the JKM benefit and the body brought home.
- The case has its own SLA ladder, ``[reintegration.sla]`` (ack, level2, resolve), used
  for its deadlines instead of the severity's (``handlers.cases.kind_deadlines``).
- ``deceased``: the case tracks the family's JKM claim: ``case.claim_id`` (None until one
  is linked), ``case.jkm_due`` and ``case.jkm_reminded_at`` (published as ``detail.jkm``:
  ``{claim_id, due, reminded_at}``). A JKM claim of the worker already on record is linked
  at once; one filed later is linked when it arrives (``garda.case.claim-linked``; the
  claim's later timeline rows, its status changes, then reach the case too). When none is
  linked by ``due`` (case opening + ``reintegration.jkm_reminder``, 30 d), the timer sends ``garda.reintegration.reminder-due``
  and the case gets ``garda.case.jkm-claim-missing`` and ``garda.alert.jkm-claim-missing``
  to the unit, exactly once (the reminder is remembered in the case; a replayed or early
  command is a no-op).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from handlers.cases import PROTECTION, case_or_not_found, open_case
from handlers.context import Ctx
from handlers.model import Aggregate, Case, Claim, iso, parse_dt
from handlers.policy import Policy
from handlers.prevention_policy import ServiceUnit
from handlers.routing import RouteDecision

KIND = "reintegration"
REMINDER_COMMAND = "garda.reintegration.reminder-due"
RETURN = "pmi.return.recorded"
_CODES = ("province", "regency", "village")


def _codes(origin: dict[str, Any] | None) -> dict[str, str | None]:
    origin = origin or {}
    out: dict[str, str | None] = {}
    for k in _CODES:
        v = origin.get(k)
        out[k] = v.strip() if isinstance(v, str) and v.strip() else None
    return out


def route_origin(policy: Policy, origin: dict[str, Any] | None) -> RouteDecision:
    """The service unit of a returnee's origin (most specific first), else headquarters."""
    codes = _codes(origin)
    units = policy.prevention.reintegration.units
    wanted: list[tuple[str, Callable[[ServiceUnit], bool]]] = [
        (
            "desmigratif",
            lambda u: (
                (u.province, u.regency, u.village)
                == (codes["province"], codes["regency"], codes["village"])
            ),
        ),
        (
            "regency_office",
            lambda u: (u.province, u.regency) == (codes["province"], codes["regency"]),
        ),
        ("province_office", lambda u: u.province == codes["province"]),
    ]
    if codes["province"] is not None:
        for kind, match in wanted:
            for unit in units:
                if unit.kind == kind and match(unit):
                    return RouteDecision(
                        unit.unit_id, f"origin {_show(codes)} is served by {unit.name}"
                    )
    where = _show(codes) if codes["province"] else "unknown"
    return RouteDecision(
        policy.headquarters, f"no service unit for origin {where}; routed to headquarters"
    )


def _show(codes: dict[str, str | None]) -> str:
    return "/".join(v for v in (codes[k] for k in _CODES) if v) or "unknown"


def remember_origin(agg: Aggregate, ctx: Ctx) -> None:
    """After a departure: the worker's origin codes (kept when a departure has none)."""
    origin = ctx.envelope.data.get("origin")
    if isinstance(origin, dict):
        codes: dict[str, str] = {}  # the non-blank codes of _codes(origin), one loop
        for k in _CODES:
            v = origin.get(k)
            if isinstance(v, str):
                v = v.strip()
                if v:
                    codes[k] = v
        if codes:
            agg.worker.origin = codes


def _protection_recent(agg: Aggregate, returned_at: datetime, policy: Policy) -> str | None:
    """Why the worker's protection history calls for reintegration (None: it does not)."""
    lookback = policy.prevention.reintegration.protection_lookback
    for case in sorted(agg.cases.values(), key=lambda c: c.case_id):
        if case.kind != PROTECTION:
            continue
        if case.is_open:
            return f"protection case {case.case_id} open"
        if case.resolved_at is not None and case.resolved_at >= returned_at - lookback:
            return f"protection case {case.case_id} resolved {iso(case.resolved_at)}"
    return None


def open_reintegration(agg: Aggregate) -> Case | None:
    return next((c for c in agg.open_cases() if c.kind == KIND), None)


def after_journey_change(agg: Aggregate, ctx: Ctx) -> None:
    """On an accepted return: open the reintegration case the rules call for, if any."""
    if ctx.envelope.type != RETURN or ctx.outcome not in ("returned", "deceased"):
        return
    w = agg.worker
    policy = ctx.policy.prevention.reintegration
    reason = w.return_reason
    returned_at = w.returned_at
    if reason is None or returned_at is None or open_reintegration(agg) is not None:
        return
    trigger = f"return reason {reason}" if reason in policy.reasons else None
    trigger = trigger or _protection_recent(agg, returned_at, ctx.policy)
    if trigger is None:
        return
    decision = route_origin(ctx.policy, w.origin)
    deceased = reason == "deceased"
    detail: dict[str, Any] = {
        "return_reason": reason,
        "returned_at": iso(returned_at),
        "trigger": trigger,
        "origin": dict(w.origin or {}),
        "service_unit": decision.post_id,
    }
    case = open_case(
        agg,
        ctx,
        kind=KIND,
        category=None,
        severity=policy.deceased_severity if deceased else policy.severity,
        cause=f"return:{iso(returned_at)}",
        country=None,
        region=None,
        detail=detail,
        decision=decision,
    )
    if deceased and case.jkm_due is None:
        case.jkm_due = case.opened_at + policy.jkm_reminder
        claim = _jkm_claim(agg)
        if claim is not None:
            _link(ctx, case, claim)
    ctx.alert("reintegration", w.worker_id, {"trigger": trigger, **_unit(decision)}, case=case)


def _unit(decision: RouteDecision) -> dict[str, Any]:
    return {"service_unit": decision.post_id, "routing_note": decision.note}


def _jkm_claim(agg: Aggregate) -> Claim | None:
    claims = [c for c in agg.claims.values() if c.program == "JKM"]
    claims.sort(key=lambda c: (c.filed_at is None, iso(c.filed_at) or "", c.claim_id))
    return claims[0] if claims else None


def _link(ctx: Ctx, case: Case, claim: Claim) -> None:
    case.claim_id = claim.claim_id
    if claim.case_id is None:
        claim.case_id = case.case_id
    ctx.case_event(
        case,
        "garda.case.claim-linked",
        actor="garda",
        detail={"claim_id": claim.claim_id, "program": claim.program},
    )


def after_claim_filed(agg: Aggregate, ctx: Ctx) -> None:
    """A JKM claim filed: linked to the open reintegration case waiting for one."""
    claim = agg.claims.get(ctx.envelope.data.get("claim_id", ""))
    if claim is None or claim.program != "JKM":
        return
    for case in agg.open_cases():
        if case.kind == KIND and case.jkm_due is not None and case.claim_id is None:
            _link(ctx, case, claim)
            return


def reminder_due(case: Case) -> datetime | None:
    """When the JKM reminder of ``case`` is due (None: nothing to remind)."""
    if not case.is_open or case.claim_id or case.jkm_reminded_at:
        return None
    return case.jkm_due


def due_commands(cases: Iterable[Case], now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    out: list[tuple[datetime, str, str, dict[str, Any]]] = []
    for case in cases:
        due = reminder_due(case)
        if due is None or due > now:
            continue
        data = {"case_id": case.case_id, "worker_id": case.worker_id, "due_at": iso(due)}
        out.append((due, case.case_id, f"jkm-reminder:{case.case_id}:{iso(due)}", data))
    out.sort(key=lambda item: (item[0], item[1]))
    return [(REMINDER_COMMAND, cid, data) for _, _, cid, data in out]


def handle_reminder_due(agg: Aggregate, ctx: Ctx) -> None:
    data = ctx.envelope.data
    case = case_or_not_found(agg, data.get("case_id"))
    due = reminder_due(case)
    if due is None or due > ctx.now or iso(due) != iso(parse_dt(data.get("due_at"))):
        ctx.outcome = "stale-deadline"
        return
    case.jkm_reminded_at = ctx.now
    case.updated_at = ctx.now
    detail = {
        "program": "JKM",
        "due": iso(due),
        "reason": "no JKM claim filed for the family in time",
    }
    ctx.case_event(case, "garda.case.jkm-claim-missing", actor="garda", detail=detail, at=ctx.now)
    ctx.alert("jkm-claim-missing", case.worker_id, detail, case=case)
    ctx.outcome = "reminded"


REINTEGRATION_HANDLERS: dict[str, Callable[[Aggregate, Ctx], None]] = {
    REMINDER_COMMAND: handle_reminder_due,
}
