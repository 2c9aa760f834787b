"""Social-security coverage (design §5 "Insurance", Permenaker 4/2023). Pure rules, no I/O.

- ``coverage_window(worker, policy)``: (insured_from, insured_until) or ``None``.
- ``update_coverage(agg, ctx)``: store the window on the worker; call after a departure, a
  contract extension and a return (and whenever departed_at/contract_end/returned_at or
  has_social_security change).
- ``is_covered(worker, at, policy)``: is ``at`` inside the window (day granularity, below).
- ``check_incident_coverage(agg, ctx, case, category, occurred_at)``: ``coverage_gap`` case
  and, for a death, the ``claim_suggested`` alert.
- ``recheck_gaps(agg, ctx)``: after a journey change, close the open ``coverage_gap`` cases
  the new facts disprove (see below).

Rules decided where the design is silent:

- Window start: ``departed_at - pre_placement`` (coverage runs "up to 5 months before
  departure"; ``contract_start`` plays no part).
- Window end, first that applies:
  returned: ``returned_at + post_placement`` (a return before the contract end shortens the
  window; a return after it, without an extension on record, still counts up to the return);
  else a known ``contract_end`` (the worker keeps the latest, extensions included):
  ``contract_end + post_placement``;
  else ``departed_at + default_contract + post_placement``.
- No window (``None``) when the worker has no social-security membership
  (``has_social_security`` false, i.e. no ``bpjs_membership_no`` at departure) or has no
  departure on record (``departed_at`` None: first seen abroad, or failed before leaving).
  A departure flagged non-procedural for other reasons keeps its window: BPJS coverage
  follows membership, not procedure.
- Boundaries at day granularity in UTC, both ends inclusive: ``at`` is covered when
  ``insured_from.date() <= at.date() <= insured_until.date()`` (UTC dates). An incident at
  23:59:59Z on the last day is covered, one at 00:00:00Z the next day is not.
- ``coverage_gap``: for categories in ``policy.coverage.gap_categories``, one case per
  incident (cause = incident id), ``category`` None (the incident category is in ``detail``
  so the gap case never absorbs later reports of that category), severity and routing of
  the protection case, ``detail.reason`` = ``no_membership`` (no membership) or
  ``outside_window`` (a member, but ``occurred_at`` outside the window or no departure on
  record: then insured_from/insured_until are null).
- ``claim_suggested`` (category ``death``, whatever the coverage): program ``JKK`` (work
  accident: higher benefit) when the worker has another protection case of category
  ``accident`` (open, or ``work_accident=True`` passed by the caller), else ``JKM``. Raised
  once per protection case (remembered in ``case.claim_suggested``, the program, and
  ``case.claim_suggested_at``).
- **A late journey record can disprove a gap.** Kafka orders a worker's events within one
  topic only, so an incident may be applied before the departure published just before it;
  the gap it opened (worker unknown: ``no_membership``) is then wrong. After every journey
  change, each *open* ``coverage_gap`` case whose ``occurred_at`` now falls inside the
  window is resolved by ``garda`` (``garda.case.resolved``, resolution ``covered``, detail
  ``reason: disproved`` with the journey event type and the new window): closed with a
  timeline entry, never deleted, so the history shows both steps. An acknowledged gap is
  closed too (the officer's work is in its timeline); a resolved one is left alone. A gap
  the new facts do not disprove stays open.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from handlers.cases import open_case
from handlers.context import Ctx
from handlers.model import Aggregate, Case, Worker, iso, parse_dt
from handlers.policy import Policy

CASE_KIND = "coverage_gap"


def coverage_window(worker: Worker, policy: Policy) -> tuple[datetime, datetime] | None:
    """(insured_from, insured_until) of the worker, or ``None`` when not insured at all."""
    if not worker.has_social_security or worker.departed_at is None:
        return None
    cov = policy.coverage
    start = worker.departed_at - cov.pre_placement
    if worker.returned_at is not None:
        end = worker.returned_at + cov.post_placement
    elif worker.contract_end is not None:
        end = worker.contract_end + cov.post_placement
    else:
        end = worker.departed_at + cov.default_contract + cov.post_placement
    return start, max(start, end)


def update_coverage(agg: Aggregate, ctx: Ctx) -> tuple[datetime, datetime] | None:
    """Set ``worker.insured_from``/``insured_until`` from the window (both None without one)."""
    window = coverage_window(agg.worker, ctx.policy)
    agg.worker.insured_from, agg.worker.insured_until = window or (None, None)
    return window


def _utc_date(dt: datetime) -> date:
    return dt.astimezone(UTC).date()


def in_window(window: tuple[datetime, datetime] | None, at: datetime) -> bool:
    if window is None:
        return False
    start, end = window
    return _utc_date(start) <= _utc_date(at) <= _utc_date(end)


def is_covered(worker: Worker, at: datetime, policy: Policy) -> bool:
    """True when ``at`` falls on a (UTC) day from insured_from's through insured_until's."""
    return in_window(coverage_window(worker, policy), at)


def suggested_program(agg: Aggregate, case: Case, work_accident: bool | None = None) -> str:
    """JKK for a death after a work accident, JKM otherwise (see module notes)."""
    if work_accident is None:
        work_accident = any(
            c.kind == "protection"
            and c.category == "accident"
            and c.case_id != case.case_id
            and c.is_open
            for c in agg.cases.values()
        )
    return "JKK" if work_accident else "JKM"


def check_incident_coverage(
    agg: Aggregate,
    ctx: Ctx,
    case: Case,
    category: str | None,
    occurred_at: datetime | str,
    *,
    incident_id: str | None = None,
    work_accident: bool | None = None,
) -> Case | None:
    """After an incident opened or joined ``case``: open a ``coverage_gap`` case when due, and
    raise ``claim_suggested`` for a death. Returns the gap case (new or existing) or None.

    ``incident_id`` defaults to the input event's ``data.incident_id``.
    """
    if isinstance(occurred_at, str):
        occurred_at = parse_dt(occurred_at)
    incident_id = incident_id or ctx.envelope.data.get("incident_id")
    w = agg.worker
    window = coverage_window(w, ctx.policy)
    covered = in_window(window, occurred_at)
    gap: Case | None = None
    if category in ctx.policy.coverage.gap_categories and not covered:
        reason = "no_membership" if not w.has_social_security else "outside_window"
        detail: dict[str, Any] = {
            "reason": reason,
            "insured_from": iso(window[0]) if window else None,
            "insured_until": iso(window[1]) if window else None,
            "occurred_at": iso(occurred_at),
            "incident_id": incident_id,
            "incident_category": category,
            "protection_case_id": case.case_id,
        }
        gap = open_case(
            agg,
            ctx,
            kind=CASE_KIND,
            category=None,
            severity=case.severity,
            cause=str(incident_id),
            country=case.country,
            region=case.region,
            detail=detail,
        )
    if category == "death" and case.claim_suggested is None:
        program = suggested_program(agg, case, work_accident)
        case.claim_suggested, case.claim_suggested_at = program, ctx.event_time
        ctx.alert(
            "claim_suggested",
            w.worker_id,
            {
                "program": program,
                "incident_id": incident_id,
                "case_id": case.case_id,
                "covered": covered,
                "insured_until": iso(window[1]) if window else None,
            },
            case=case,
        )
    return gap


GAP_DISPROVED = "covered"


def recheck_gaps(agg: Aggregate, ctx: Ctx) -> list[Case]:
    """Resolve the open coverage_gap cases the worker's current window disproves."""
    window = coverage_window(agg.worker, ctx.policy)
    if window is None:
        return []
    closed: list[Case] = []
    gaps = [c for c in agg.cases.values() if c.kind == CASE_KIND and c.is_open]  # few: sort them
    for case in sorted(gaps, key=lambda c: c.case_id) if gaps else ():
        if case.kind != CASE_KIND or not case.is_open:
            continue
        occurred = parse_dt(case.detail.get("occurred_at"))
        if occurred is None or not in_window(window, occurred):
            continue
        # Never before the gap's own last step (the departure may be dated before it opened).
        at = max(ctx.event_time, case.updated_at or case.opened_at)
        case.status = "resolved"
        case.resolved_at = at
        case.updated_at = at
        case.detail["resolution"] = GAP_DISPROVED
        ctx.case_event(
            case,
            "garda.case.resolved",
            detail={
                "resolution": GAP_DISPROVED,
                "reason": "disproved",
                "by": ctx.envelope.type,
                "insured_from": iso(window[0]),
                "insured_until": iso(window[1]),
                "note": "a journey record received later puts the incident inside the "
                "coverage window",
            },
            at=at,
        )
        closed.append(case)
    return closed
