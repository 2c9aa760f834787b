"""Cases (design §5): severity, deadlines, opening, dedup and attaching reports. Pure, no I/O.

- ``severity_for(policy, category, reported)``: the higher of the reported severity and the
  category's default.
- ``deadlines(policy, severity, start) -> (ack_due, resolve_due)``.
- ``open_case(agg, ctx, *, kind, category, severity, cause, country, region, ...)``: opens
  (or, on a replay, returns) the case caused by ``cause``.
- ``find_attachable_case(agg, category, at, policy)``: the open protection case a new report
  of ``category`` joins, if any.
- ``attach_report(agg, ctx, case, severity, incident_id)``: one more report on a case.
- ``raise_severity(ctx, case, severity)``: severity may rise, never fall.

Rules decided where the design is silent:
- Case id: ``stable_id(worker_id, kind, cause, prefix="CASE-")``. Opening a case whose id
  already exists returns the existing case unchanged, whatever its status (a replay opens
  nothing twice, and a resolved case is not reopened by a replay).
- Every new case gets two steps: ``garda.case.opened`` (detail: cause, routing note,
  country, region and the case's published detail, ``Case.public_detail``) and ``garda.case.assigned`` (detail: post_id and
  the routing note). Every case is assigned: headquarters is a post too.
- Dedup window: a report at ``at`` joins the open (``open``/``acknowledged``/``reopened``)
  ``protection`` case of the same category whose last report (else its opening) is at most
  ``policy.dedup_window`` away from ``at``, both directions (a late report of an earlier
  incident joins too). Exactly 72 h joins; 72 h and 1 µs does not. When several cases
  qualify, the one with the latest last report wins (ties: the earliest case id).
- ``at`` for dedup and ``last_report_at`` is the report time (``ctx.event_time``), not the
  incident's ``occurred_at``: the window is about reports.
- A severity rise recomputes ``ack_due``/``resolve_due`` from the case's clock start: its
  ``opened_at``, or the reopen time kept in ``case.clock_started_at``. The escalation level already reached is kept.
- A case opened by a late report (an event dated more than ``intake.max_event_age`` before
  Garda received it, ``Ctx.late_report``) opens at the receipt time: its ``opened_at`` and
  deadlines start when Garda learned of it, not at the event's ``time`` (a report dated 1970
  must not open a case already past every deadline and escalate it on the next tick).
  ``detail.late_report`` keeps the event's ``time`` and the receipt time.
- Unknown categories (or ``None``, for non-protection cases) have no default: the reported
  severity is used, ``medium`` when there is none.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from errors import NotFound, Unacceptable
from handlers.context import Ctx
from handlers.model import (
    SEVERITIES,
    Aggregate,
    Case,
    iso,
    max_severity,
    severity_rank,
    stable_id,
)
from handlers.policy import Policy
from handlers.routing import RouteDecision, route

PROTECTION = "protection"
DEFAULT_SEVERITY = "medium"
LATE_REPORT = "late_report"  # {time, received_at} of a case opened by a late report


def severity_for(policy: Policy, category: str | None, reported: str | None) -> str:
    if reported is not None and reported not in SEVERITIES:
        raise Unacceptable(f"unknown severity {reported!r}")
    default = policy.category_severity.get(category) if category is not None else None
    if default is None:
        return reported or DEFAULT_SEVERITY
    if reported is None:
        return default
    return max_severity(default, reported)


def deadlines(policy: Policy, severity: str, opened_at: datetime) -> tuple[datetime, datetime]:
    """(ack_due, resolve_due) of a case of ``severity`` whose clocks start at ``opened_at``."""
    sla = policy.sla[severity]
    return opened_at + sla.ack, opened_at + sla.resolve


def kind_deadlines(
    policy: Policy, kind: str, severity: str, start: datetime
) -> tuple[datetime, datetime]:
    """(ack_due, resolve_due) of a case of ``kind``: a kind with its own SLA ladder
    (``policy.prevention.kind_sla``, e.g. ``reintegration``) uses it, any other the
    severity's."""
    sla = policy.prevention.kind_sla(kind)
    if sla is None:
        return deadlines(policy, severity, start)
    return start + sla.ack, start + sla.resolve


def case_id_for(worker_id: str, kind: str, cause: str) -> str:
    return stable_id(worker_id, kind, cause, prefix="CASE-")


def open_case(
    agg: Aggregate,
    ctx: Ctx,
    *,
    kind: str,
    category: str | None,
    severity: str,
    cause: str,
    country: str | None,
    region: str | None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
    decision: RouteDecision | None = None,
    claim_id: str | None = None,
) -> Case:
    worker_id = agg.worker.worker_id
    case_id = case_id_for(worker_id, kind, cause)
    existing = agg.cases.get(case_id)
    if existing is not None:
        return existing
    if severity not in SEVERITIES:
        raise Unacceptable(f"unknown severity {severity!r}")
    opened_at = at or ctx.event_time
    detail = dict(detail or {})
    if at is None and ctx.late_report and ctx.envelope.time is not None:
        detail[LATE_REPORT] = {"time": iso(ctx.envelope.time), "received_at": iso(opened_at)}
    if decision is None:  # the caller may route itself (a returnee's origin service unit)
        decision = route(ctx.policy, country, region)
    ack_due, resolve_due = kind_deadlines(ctx.policy, kind, severity, opened_at)
    case = Case(
        case_id=case_id,
        worker_id=worker_id,
        kind=kind,
        category=category,
        severity=severity,
        post_id=decision.post_id,
        opened_at=opened_at,
        ack_due=ack_due,
        resolve_due=resolve_due,
        country=country.strip().upper() if country else None,
        region=region.strip().upper() if region else None,
        routing_note=decision.note,
        last_report_at=opened_at,
        updated_at=opened_at,
        cause=cause,
        claim_id=claim_id,
        detail=detail,
    )
    agg.cases[case_id] = case
    ctx.case_event(
        case,
        "garda.case.opened",
        detail={
            "cause": cause,
            "routing_note": decision.note,
            "country": case.country,
            "region": case.region,
            **case.public_detail(),
        },
        at=opened_at,
    )
    ctx.case_event(
        case,
        "garda.case.assigned",
        detail={"post_id": decision.post_id, "routing_note": decision.note},
        at=opened_at,
    )
    return case


def case_or_not_found(agg: Aggregate, case_id: object) -> Case:
    """The worker's case with this id, or ``NotFound`` for an unknown one."""
    case = agg.cases.get(case_id) if isinstance(case_id, str) else None
    if case is None:
        raise NotFound(f"unknown case {case_id!r}")
    return case


def find_attachable_case(
    agg: Aggregate, category: str | None, at: datetime, policy: Policy
) -> Case | None:
    """The open protection case of ``category`` a report at ``at`` joins (see the module
    notes): the latest last report within the window; of equal ones the lowest case id (and
    of equal ids the first met, as in a stable sort by id). One pass, no sort."""
    best: Case | None = None
    best_last: datetime | None = None
    window = policy.dedup_window
    for case in agg.cases.values():
        if case.kind != PROTECTION or not case.is_open or case.category != category:
            continue
        last = case.last_report_at or case.opened_at
        if abs(at - last) > window:
            continue
        if (
            best is None
            or best_last is None
            or last > best_last
            or (last == best_last and case.case_id < best.case_id)
        ):
            best, best_last = case, last
    return best


def clock_start(case: Case) -> datetime:
    return case.clock_started_at or case.opened_at


def raise_severity(ctx: Ctx, case: Case, severity: str | None) -> bool:
    """Raise the case's severity to ``severity`` if higher; never lowers. True if it rose."""
    if severity is None or severity_rank(severity) <= severity_rank(case.severity):
        return False
    case.severity = severity
    case.ack_due, case.resolve_due = kind_deadlines(
        ctx.policy, case.kind, severity, clock_start(case)
    )
    return True


def attach_report(
    agg: Aggregate, ctx: Ctx, case: Case, severity: str | None, incident_id: str | None
) -> Case:
    """Attach one more report to ``case`` (``garda.case.report-attached``)."""
    at = ctx.event_time
    before = case.severity
    case.reports += 1
    if incident_id is not None and incident_id not in case.incident_ids:
        case.incident_ids.append(incident_id)
    last = case.last_report_at or case.opened_at
    case.last_report_at = max(last, at)
    raise_severity(ctx, case, severity)
    case.updated_at = max(case.updated_at or at, at)
    detail: dict[str, Any] = {
        "incident_id": incident_id,
        "reports": case.reports,
        "severity": case.severity,
    }
    if case.severity != before:
        detail.update(
            severity_from=before,
            ack_due=iso(case.ack_due),
            resolve_due=iso(case.resolve_due),
        )
    ctx.case_event(case, "garda.case.report-attached", actor=ctx.envelope.source, detail=detail)
    return case
