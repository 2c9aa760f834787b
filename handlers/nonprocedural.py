"""Non-procedural departures (design §5): the reasons a departure breaks the placement rules.

Pure rules, no I/O.

- ``departure_reasons(data, policy)``: the reasons of one ``pmi.departure.recorded`` data dict,
  in the fixed order of ``REASONS``.
- ``check_departure(agg, ctx)``: flag the worker and open one ``non_procedural_departure``
  case at the destination post (call it for every departure, after the journey applied it).
- ``flag_suspected(agg, ctx)``: flag a worker first seen abroad through an incident.

Rules decided where the design is silent:

- A field "is missing" when it is absent, ``None`` or a blank string (``p3mi_license``,
  ``e_pmi_id``, ``bpjs_membership_no``). ``visa_type`` other than exactly ``"work"``
  (including a missing one) is ``non_work_visa``.
- Licence numbers are compared trimmed and case-insensitively with the revoked list; a
  revoked licence is ``revoked_agency`` whatever the scheme.
- Moratorium: the departure date is the calendar date of ``departed_at`` *as written* (in
  the offset the embarkation post recorded, i.e. the local date; a bare "YYYY-MM-DD" is
  accepted). A moratorium applies when the destination country matches, the employer type is
  one of its ``employer_types`` and ``effective_from <= departure date < effective_until``:
  ``effective_from`` is the first day the moratorium is in force (inclusive),
  ``effective_until`` is the first day it is lifted (exclusive: a departure on that date is
  allowed); ``effective_until = None`` means still in force.
- The worker's reasons are the sorted union of every departure's reasons (a later clean
  departure does not clear an earlier finding: the case stays the record of it), except
  ``suspected_unregistered``, which a departure record answers: it is dropped, and the
  worker stays ``non_procedural`` only if some real reason remains.
- Case cause: the journey, i.e. the destination country and ``departed_at`` (not the
  event): a replay, or the same departure re-sent under another event id (a registry
  re-sync), finds the case it already opened; reasons it adds join that case (severity may
  rise, a ``garda.case.updated`` event says what was added).
- ``flag_suspected`` flags only: the incident already opens a protection case, a second
  (non-procedural) case for the same worker would double the work of the same post.
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from typing import Any

from handlers.cases import open_case, raise_severity
from handlers.context import Ctx
from handlers.model import Aggregate, Case, iso, parse_dt
from handlers.policy import NON_PROCEDURAL_REASONS, Moratorium, Policy

REASONS: tuple[str, ...] = NON_PROCEDURAL_REASONS
SUSPECTED = "suspected_unregistered"
CASE_KIND = "non_procedural_departure"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _norm_licence(value: str) -> str:
    return value.strip().casefold()


@functools.lru_cache(maxsize=8)
def _revoked(licences: frozenset[str]) -> frozenset[str]:
    """The policy's revoked licences as compared (once per policy, not per departure)."""
    return frozenset(_norm_licence(x) for x in licences)


def departure_date(departed_at: Any) -> date | None:
    """The calendar date of ``departed_at`` as written (local date at embarkation)."""
    if departed_at is None:
        return None
    if isinstance(departed_at, datetime):
        return departed_at.date()
    if isinstance(departed_at, date):
        return departed_at
    return date.fromisoformat(str(departed_at).strip()[:10])


def moratorium_for(
    country: str | None, employer_type: str | None, on: date | None, policy: Policy
) -> Moratorium | None:
    """The moratorium in force for this destination and employer type on ``on``, if any
    (remembered per policy and input: departures repeat their destinations and dates)."""
    if not country or not employer_type or on is None:
        return None
    if type(country) is not str or type(employer_type) is not str or type(on) is not date:
        return _moratorium_for(country, employer_type, on, policy)  # as before
    key = (id(policy), country, employer_type, on)
    hit = _MORATORIA.get(key)
    if hit is not None and hit[0] is policy:
        return hit[1]
    found = _moratorium_for(country, employer_type, on, policy)
    if len(_MORATORIA) >= _MORATORIA_MAX:
        _MORATORIA.clear()
    _MORATORIA[key] = (policy, found)
    return found


# (id(policy), country, employer type, date) -> (policy, moratorium): as ``routing._ROUTES``
# (the entry keeps its policy alive, so that its id is not reused). Bounded: cleared when full.
_MORATORIA: dict[tuple[int, str, str, date], tuple[Policy, Moratorium | None]] = {}
_MORATORIA_MAX = 4096


def _moratorium_for(
    country: str, employer_type: str, on: date, policy: Policy
) -> Moratorium | None:
    country = country.strip().upper()
    for m in policy.non_procedural.moratoria:
        if m.country.upper() != country or employer_type not in m.employer_types:
            continue
        if m.effective_from <= on and (m.effective_until is None or on < m.effective_until):
            return m
    return None


def departure_reasons(data: dict[str, Any], policy: Policy) -> list[str]:
    """The non-procedural reasons of one ``pmi.departure.recorded`` data dict (``REASONS`` order)."""
    np = policy.non_procedural
    licence = data.get("p3mi_license")
    found: set[str] = set()
    if data.get("scheme") in np.licensed_schemes and _missing(licence):
        found.add("unlicensed_agency")
    if licence is not None and not _missing(licence):
        if _norm_licence(licence) in _revoked(np.revoked_licenses):
            found.add("revoked_agency")
    if _missing(data.get("e_pmi_id")):
        found.add("no_worker_card")
    if data.get("visa_type") != "work":
        found.add("non_work_visa")
    if _missing(data.get("bpjs_membership_no")):
        found.add("no_social_security")
    on = departure_date(data.get("departed_at"))
    if moratorium_for(data.get("destination_country"), data.get("employer_type"), on, policy):
        found.add("moratorium_destination")
    if not found:  # most departures
        return []
    return [r for r in REASONS if r in found]


def severity_for_reasons(reasons: list[str], policy: Policy) -> str:
    return (
        "critical" if any(r in policy.non_procedural.critical_reasons for r in reasons) else "high"
    )


def check_departure(agg: Aggregate, ctx: Ctx) -> Case | None:
    """Flag a non-procedural departure and open its case; ``None`` when the departure is clean.

    Call for every ``pmi.departure.recorded`` after the journey has applied it.
    """
    data = ctx.envelope.data
    w = agg.worker
    reasons = departure_reasons(data, ctx.policy)
    had_suspicion = SUSPECTED in w.non_procedural_reasons
    merged = {r for r in w.non_procedural_reasons if r != SUSPECTED} | set(reasons)
    w.non_procedural_reasons = sorted(merged)
    w.non_procedural = bool(merged)
    if had_suspicion or reasons:
        w.updated_at = ctx.event_time
    if not reasons:
        return None
    country = data.get("destination_country")
    region = data.get("destination_region")
    severity = severity_for_reasons(reasons, ctx.policy)
    known = set(agg.cases)
    case = open_case(
        agg,
        ctx,
        kind=CASE_KIND,
        category=None,
        severity=severity,
        # The journey is the cause, not the event: the same departure sent again under another
        # event id (a registry re-sync) finds the case it already opened.
        cause=f"departure:{country}:{iso(parse_dt(data['departed_at']))}",
        country=country,
        region=region,
        detail={"reasons": list(reasons)},
    )
    if case.case_id in known:
        # The same journey reported again: what it adds joins the case it already opened.
        found = list(case.detail.get("reasons") or [])
        added = [r for r in reasons if r not in found]
        if added:
            case.detail["reasons"] = [r for r in REASONS if r in {*found, *added}]
            before = case.severity
            raise_severity(ctx, case, severity)
            ctx.case_event(
                case,
                "garda.case.updated",
                detail={"reasons_added": added, "severity_from": before, "severity": case.severity},
            )
    else:
        ctx.alert(
            CASE_KIND,
            w.worker_id,
            {
                "reasons": list(reasons),
                "destination_country": country,
                "destination_region": region,
                "departed_at": data.get("departed_at"),
            },
            case=case,
        )
    return case


def flag_suspected(agg: Aggregate, ctx: Ctx | None = None) -> None:
    """Flag a worker first seen abroad through an incident (state ``unregistered_abroad``).

    Sets ``non_procedural`` with the reason ``suspected_unregistered``; opens no case (the
    incident's protection case is the action item). Idempotent.
    """
    w = agg.worker
    if SUSPECTED not in w.non_procedural_reasons:
        w.non_procedural_reasons = sorted({*w.non_procedural_reasons, SUSPECTED})
        if ctx is not None:
            w.updated_at = ctx.event_time
    w.non_procedural = True
