"""Incidents (design §5 "Cases"): the pmi.incidents.v1 events. Pure, no I/O.

``pmi.incident.reported``:
1. An incident id some case already holds is a no-op (outcome ``duplicate-incident``): the
   same incident re-sent under another event id attaches or opens nothing twice.
2. A worker with no state yet (never seen) becomes ``unregistered_abroad`` with the
   incident's country/region and ``first_seen_via = "pmi.incident.reported"``; the
   ``ON_FIRST_SEEN`` hooks run (``nonprocedural.flag_suspected``).
3. Severity = the higher of the reported one and the category default.
4. The report joins the attachable protection case (same category, open, last report
   within the dedup window: ``cases.find_attachable_case``; outcome ``attached``), else
   opens a ``protection`` case with cause = incident id (outcome ``opened``), routed by the
   incident's country/region. ``AFTER_INCIDENT`` hooks run with the case either way
   (``coverage.check_incident_coverage``: coverage gap, claim suggestion).

``pmi.incident.updated``: the case holding the incident id (else ``NotFound``).
- ``category``: the case takes the new category (a case has one category; its incidents all
  shared the old one when they were attached). Later reports of the new category attach to
  it. Severity then rises to the new category's default if that is higher; it never falls.
- ``severity``: may rise (deadlines recomputed), never falls: a lower value is recorded in
  the timeline row but does not change the case.
- ``note`` and the changes go to one timeline row of type ``pmi.incident.updated`` (actor:
  the event's source). The design lists no ``garda.case.*`` type for it, so no case event
  is published; the worker snapshot (dispatch) carries a changed ``in_crisis``.
- A changed ``category`` then gets the coverage checks of a report of that category
  (``coverage.check_incident_coverage``, dated by the case's first ``occurred_at``): a change
  to ``death`` raises ``claim_suggested``, a gap category outside coverage opens a
  ``coverage_gap`` (one per incident id, as for reports).

Rules decided where the design is silent:
- The worker's last known country/region change only for a worker known solely through
  incidents (``unregistered_abroad``): for a worker with a journey, the journey is the
  source of the location, and the case keeps the incident's own country/region.
- The case's ``detail`` keeps the first incident's ``incident_id``, ``reporter_type``,
  ``occurred_at`` and ``description``; later reports are in the timeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from errors import NotFound
from handlers import claims, coverage, nonprocedural
from handlers.cases import (
    PROTECTION,
    attach_report,
    find_attachable_case,
    open_case,
    raise_severity,
    severity_for,
)
from handlers.context import Ctx
from handlers.model import Aggregate, Case
from handlers.routing import normalize_country, normalize_region

Hook = Callable[[Aggregate, Ctx], object]
CaseHook = Callable[[Aggregate, Ctx, Case], object]


# Checks that follow an incident plug in below (ON_FIRST_SEEN, AFTER_INCIDENT), one line each.
def _check_coverage(agg: Aggregate, ctx: Ctx, case: Case) -> None:
    data = ctx.envelope.data
    coverage.check_incident_coverage(agg, ctx, case, data["category"], data["occurred_at"])


ON_FIRST_SEEN: list[Hook] = [nonprocedural.flag_suspected]


def _link_waiting_claims(agg: Aggregate, ctx: Ctx, case: Case) -> None:
    claims.link_waiting(agg)


AFTER_INCIDENT: list[CaseHook] = [_check_coverage, _link_waiting_claims]

DUPLICATE = "duplicate-incident"


def case_holding(agg: Aggregate, incident_id: str) -> Case | None:
    """The case holding ``incident_id``; of several, the first opened (ties: the lowest case
    id). One pass, no sort: the first of the holders in (opened_at, case_id) order, and of
    equal keys the first met, as the first holder of the stably sorted cases was."""
    found: Case | None = None
    for case in agg.cases.values():
        if incident_id in case.incident_ids and (
            found is None or (case.opened_at, case.case_id) < (found.opened_at, found.case_id)
        ):
            found = case
    return found


def incident_reported(agg: Aggregate, ctx: Ctx) -> None:
    data = ctx.envelope.data
    incident_id = str(data["incident_id"])
    if case_holding(agg, incident_id) is not None:
        ctx.outcome = DUPLICATE
        return
    w = agg.worker
    category = data["category"]
    country = normalize_country(data.get("country"))
    region = normalize_region(country, data.get("region"))
    if w.state is None:
        w.state = "unregistered_abroad"
        w.first_seen_via = w.first_seen_via or ctx.envelope.type
        w.country, w.region = country, region
        for hook in ON_FIRST_SEEN:
            hook(agg, ctx)
    elif w.state == "unregistered_abroad" and country is not None:
        w.country, w.region = country, region

    severity = severity_for(ctx.policy, category, data.get("severity"))
    case = find_attachable_case(agg, category, ctx.event_time, ctx.policy)
    if case is not None:
        attach_report(agg, ctx, case, severity, incident_id)
        ctx.outcome = "attached"
    else:
        detail: dict[str, Any] = {
            "incident_id": incident_id,
            "reporter_type": data.get("reporter_type"),
            "occurred_at": data.get("occurred_at"),
        }
        if data.get("description"):
            detail["description"] = data["description"]
        case = open_case(
            agg,
            ctx,
            kind=PROTECTION,
            category=category,
            severity=severity,
            cause=incident_id,
            country=country,
            region=region,
            detail=detail,
        )
        if incident_id not in case.incident_ids:
            case.incident_ids.append(incident_id)
        ctx.outcome = "opened"
    for case_hook in AFTER_INCIDENT:
        case_hook(agg, ctx, case)


def incident_updated(agg: Aggregate, ctx: Ctx) -> None:
    data = ctx.envelope.data
    incident_id = str(data["incident_id"])
    case = case_holding(agg, incident_id)
    if case is None:
        raise NotFound(f"no case holds incident {incident_id}")
    detail: dict[str, Any] = {"incident_id": incident_id}
    category = data.get("category")
    if category is not None and category != case.category:
        detail.update(category_from=case.category, category=category)
        case.category = category
    reported = data.get("severity")
    if reported is not None:
        detail["reported_severity"] = reported
    before = case.severity
    if category is not None or reported is not None:
        raise_severity(ctx, case, severity_for(ctx.policy, case.category, reported))
    if case.severity != before:
        detail.update(severity_from=before, severity=case.severity)
    if data.get("note"):
        detail["note"] = data["note"]
    case.updated_at = max(case.updated_at or ctx.event_time, ctx.event_time)
    # A change of category or severity is a case change consumers must see on pmi.cases.v1
    # (garda.case.updated, an addition to design §2); a note alone is a timeline row.
    changed = "category_from" in detail or "severity_from" in detail
    ctx.case_event(
        case,
        "garda.case.updated" if changed else "pmi.incident.updated",
        actor=ctx.envelope.source,
        detail=detail,
    )
    ctx.outcome = "updated"
    occurred_at = case.detail.get("occurred_at")
    if "category_from" in detail and case.kind == PROTECTION and occurred_at:
        # A new category gets the checks a report of it would have had (a death raises
        # claim_suggested; a gap category outside coverage opens a coverage_gap), dated by
        # the case's first incident (an update carries no occurred_at).
        coverage.check_incident_coverage(
            agg, ctx, case, case.category, occurred_at, incident_id=incident_id
        )


INCIDENT_HANDLERS: dict[str, Callable[[Aggregate, Ctx], None]] = {
    "pmi.incident.reported": incident_reported,
    "pmi.incident.updated": incident_updated,
}
