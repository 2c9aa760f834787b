"""BPJS Ketenagakerjaan claims (design §4 claims, §5 "Insurance"). Pure rules, no I/O.

Handlers (``CLAIM_HANDLERS``), each ``(agg, ctx) -> None`` setting ``ctx.outcome``:
- ``pmi.claim.filed`` -> ``handle_claim_filed``
- ``pmi.claim.status-changed`` -> ``handle_claim_status``
- ``garda.claim.stalled`` (a command the processor sends through the worker's stream, data
  ``claim_id``, ``worker_id``, ``last_change_at``) -> ``handle_claim_stall``
Helpers for the processor: ``stalled_claims(agg, policy, now)``, ``stall_due(claim, policy)``.

Lifecycle: filed -> docs_pending -> submitted -> verified -> approved -> paid, with
rejected/expired from any non-terminal status. ``TRANSITIONS`` lists the in-order moves:
docs_pending may be skipped (filed -> submitted) and re-entered (more documents asked for
after submitted/verified); paid, rejected and expired are terminal.

Rules decided where the design is silent:

- History: every filing and status change is one entry ``{status, at, reason,
  amount_paid_idr, source, event_id, out_of_order}``; an entry with the same (status, at)
  as one already kept is a duplicate and changes nothing (replays, re-sends).
- Out of order: an entry is flagged (and ``claim.out_of_order`` set, sticky) when its
  ``changed_at`` is older than the claim's ``last_change_at``, when the move from the
  current status is not in ``TRANSITIONS`` (paid before approved, anything after a terminal
  status, a filing that arrives after a status change), or when the claim was not filed
  yet. It is always kept. The current status is the one with the latest ``changed_at``
  (a tie goes to the one that arrived last), so an older entry never changes it.
- A status change for an unknown claim creates the claim record (nothing lost) with
  ``program`` None, its first entry flagged out of order; the filing fills it in later.
- A worker first seen through a claim (no state yet) becomes ``unregistered_abroad``; it is
  not flagged non-procedural (a BPJS claim implies membership, the gap is in the registry).
- Link: a claim with ``incident_id`` is linked to the case whose ``incident_ids`` holds it
  (protection cases first); an unlinked claim retries on every later event, and is linked
  when the incident it names opens or joins a case (``link_waiting``). Each claim event
  adds a timeline row (``garda.claim.filed`` / ``garda.claim.status-changed``: a timeline
  row only, no case event) to the linked case and to the claim's dispute case if any.
- Dispute: ``rejected`` becoming the current status while the worker has an open
  ``protection`` case, or a stall confirmed against ``ctx.now``, opens one ``claim_dispute``
  case: cause = claim_id (so stall then rejection opens one), severity ``high``, category
  None, routed with the worker's country/region (falling back to the linked or open
  protection case's), ``case.claim_id`` the claim, detail ``{program, reason, trigger}``
  (trigger "rejected" or "stalled"; reason the insurer's reason or "no status change since
  <iso>"; the published detail carries ``claim_id`` too).
- Stall: a non-terminal claim whose ``last_change_at`` (else ``filed_at``) is at least
  ``policy.claims.stall`` before now (exactly 14 days is stalled).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from errors import Unacceptable
from handlers import reintegration
from handlers.cases import case_id_for, open_case
from handlers.context import Ctx
from handlers.model import Aggregate, Case, Claim, iso, parse_dt
from handlers.policy import Policy
from schemas.types import CLAIM_STATUSES

STATUSES = ("filed", *CLAIM_STATUSES)
TERMINAL = frozenset({"paid", "rejected", "expired"})
_ENDS = frozenset({"rejected", "expired"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "filed": frozenset({"docs_pending", "submitted"}) | _ENDS,
    "docs_pending": frozenset({"submitted"}) | _ENDS,
    "submitted": frozenset({"docs_pending", "verified"}) | _ENDS,
    "verified": frozenset({"docs_pending", "approved"}) | _ENDS,
    "approved": frozenset({"paid"}) | _ENDS,
    "paid": frozenset(),
    "rejected": frozenset(),
    "expired": frozenset(),
}
DISPUTE_KIND = "claim_dispute"
DISPUTE_SEVERITY = "high"
STALLED_COMMAND = "garda.claim.stalled"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def _first_seen(agg: Aggregate, ctx: Ctx) -> None:
    w = agg.worker
    if w.state is None:
        w.state = "unregistered_abroad"
        w.first_seen_via = w.first_seen_via or ctx.envelope.type
        w.updated_at = ctx.event_time


def _case_for_incident(agg: Aggregate, incident_id: str | None) -> Case | None:
    if not incident_id:
        return None
    holders = [c for c in agg.cases.values() if incident_id in c.incident_ids]
    holders.sort(key=lambda c: (c.kind != "protection", c.opened_at))
    return holders[0] if holders else None


def _link(agg: Aggregate, claim: Claim) -> Case | None:
    if claim.case_id and claim.case_id in agg.cases:
        return agg.cases[claim.case_id]
    case = _case_for_incident(agg, claim.incident_id)
    if case is not None:
        claim.case_id = case.case_id
    return case


def link_waiting(agg: Aggregate) -> list[Claim]:
    """Link the worker's unlinked claims whose incident now has a case: a claim filed before
    its incident was applied (another topic: Kafka gives no order between them)."""
    linked = []
    for claim in sorted(agg.claims.values(), key=lambda c: c.claim_id):
        if claim.case_id is None and claim.incident_id and _link(agg, claim) is not None:
            linked.append(claim)
    return linked


def dispute_case_of(agg: Aggregate, claim_id: str) -> Case | None:
    """The claim's ``claim_dispute`` case, if one was opened."""
    return agg.cases.get(case_id_for(agg.worker.worker_id, DISPUTE_KIND, claim_id))


def _apply_entry(claim: Claim, entry: dict[str, Any], at: datetime) -> bool:
    """Add one history entry; returns False for a duplicate. Updates status/last_change_at."""
    for e in claim.history:
        if e.get("status") == entry["status"] and e.get("at") == entry["at"]:
            return False
    filed = any(e.get("status") == "filed" for e in claim.history)
    last = claim.last_change_at
    stale = last is not None and at < last
    if entry["status"] == "filed":
        in_order = not claim.history
    else:
        in_order = filed and (
            entry["status"] == claim.status or entry["status"] in TRANSITIONS[claim.status]
        )
    entry["out_of_order"] = stale or not in_order
    claim.history.append(entry)
    if entry["out_of_order"]:
        claim.out_of_order = True
    if not stale:
        claim.status = entry["status"]
        claim.last_change_at = at
    return True


def _entry(ctx: Ctx, status: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "at": iso(at),
        **extra,
        "source": ctx.envelope.source,
        "event_id": ctx.envelope.id,
        "received_at": iso(ctx.now),
    }


def _timeline(
    agg: Aggregate, ctx: Ctx, claim: Claim, type_: str, detail: dict[str, Any], at: datetime
) -> None:
    targets: list[Case] = []
    linked = _link(agg, claim)
    if linked is not None:
        targets.append(linked)
    dispute = dispute_case_of(agg, claim.claim_id)
    if dispute is not None and dispute not in targets:
        targets.append(dispute)
    for case in targets:
        ctx.case_event(case, type_, actor=ctx.envelope.source, detail=detail, at=min(at, ctx.now))


def _open_dispute(
    agg: Aggregate, ctx: Ctx, claim: Claim, *, trigger: str, reason: str | None
) -> Case:
    w = agg.worker
    country, region = w.country, w.region
    if country is None:
        ref = _link(agg, claim) or next(
            (c for c in agg.open_cases() if c.kind == "protection"), None
        )
        if ref is not None:
            country, region = ref.country, ref.region
    return open_case(
        agg,
        ctx,
        kind=DISPUTE_KIND,
        category=None,
        severity=DISPUTE_SEVERITY,
        cause=claim.claim_id,
        country=country,
        region=region,
        claim_id=claim.claim_id,
        detail={"program": claim.program, "reason": reason, "trigger": trigger},
    )


def _has_open_protection(agg: Aggregate) -> bool:
    return any(c.kind == "protection" for c in agg.open_cases())


# ---------------------------------------------------------------------------------------
# handlers
# ---------------------------------------------------------------------------------------


def handle_claim_filed(agg: Aggregate, ctx: Ctx) -> None:
    """``pmi.claim.filed``: create (or complete) the claim, link it, add a timeline row."""
    data = ctx.envelope.data
    _first_seen(agg, ctx)
    claim_id = data["claim_id"]
    filed_at = parse_dt(data["filed_at"])
    claim = agg.claims.get(claim_id)
    if claim is None:
        claim = Claim(claim_id=claim_id, worker_id=agg.worker.worker_id, program=data["program"])
        agg.claims[claim_id] = claim
    claim.program = data["program"]
    claim.event_date = data.get("event_date", claim.event_date)
    claim.filed_at = filed_at
    if data.get("amount_idr") is not None:
        claim.amount_idr = data["amount_idr"]
    if data.get("incident_id"):
        claim.incident_id = data["incident_id"]
    entry = _entry(ctx, "filed", filed_at, benefit=data.get("benefit"))
    added = _apply_entry(claim, entry, filed_at)
    if not added:
        _link(agg, claim)
        ctx.outcome = "duplicate"
        return
    _timeline(
        agg,
        ctx,
        claim,
        "garda.claim.filed",
        {
            "claim_id": claim_id,
            "program": claim.program,
            "benefit": data.get("benefit"),
            "event_date": claim.event_date,
            "amount_idr": claim.amount_idr,
            "out_of_order": entry["out_of_order"],
        },
        filed_at,
    )
    reintegration.after_claim_filed(agg, ctx)  # a JKM claim joins a reintegration case
    ctx.outcome = "claim_filed"


def handle_claim_status(agg: Aggregate, ctx: Ctx) -> None:
    """``pmi.claim.status-changed``: record the change (in or out of order), maybe dispute."""
    data = ctx.envelope.data
    status = data["status"]
    if status not in STATUSES or status == "filed":
        raise Unacceptable(f"unknown claim status {status!r}")
    _first_seen(agg, ctx)
    claim_id = data["claim_id"]
    changed_at = parse_dt(data["changed_at"])
    claim = agg.claims.get(claim_id)
    if claim is None:
        # Unknown claim: keep the change; program unknown until the filing arrives.
        claim = Claim(claim_id=claim_id, worker_id=agg.worker.worker_id, program=None)  # type: ignore[arg-type]
        agg.claims[claim_id] = claim
    entry = _entry(
        ctx,
        status,
        changed_at,
        reason=data.get("reason"),
        amount_paid_idr=data.get("amount_paid_idr"),
    )
    added = _apply_entry(claim, entry, changed_at)
    if not added:
        _link(agg, claim)
        ctx.outcome = "duplicate"
        return
    applied = claim.status == status and claim.last_change_at == changed_at
    if data.get("amount_paid_idr") is not None and (applied or claim.amount_paid_idr is None):
        claim.amount_paid_idr = data["amount_paid_idr"]
    ctx.outcome = "claim_status"
    if applied and status == "rejected" and _has_open_protection(agg):
        known = set(agg.cases)
        case = _open_dispute(agg, ctx, claim, trigger="rejected", reason=data.get("reason"))
        if case.case_id not in known:
            ctx.outcome = "dispute_opened"
    _timeline(
        agg,
        ctx,
        claim,
        "garda.claim.status-changed",
        {
            "claim_id": claim_id,
            "program": claim.program,
            "status": status,
            "reason": data.get("reason"),
            "changed_at": iso(changed_at),
            "current_status": claim.status,
            "out_of_order": entry["out_of_order"],
        },
        changed_at,
    )


def _last_change(claim: Claim) -> datetime | None:
    return claim.last_change_at or claim.filed_at


def stall_due(claim: Claim, policy: Policy) -> datetime | None:
    """When the claim stalls if nothing changes (None: terminal or no date)."""
    last = _last_change(claim)
    if claim.status in TERMINAL or last is None:
        return None
    if claim.stall_handled_for is not None and claim.stall_handled_for >= last:
        return None  # this stall was handled; the next change restarts the clock
    return last + policy.claims.stall


def stalled_claims(agg: Aggregate, policy: Policy, now: datetime) -> list[str]:
    """Ids of the worker's non-terminal claims with no status change for ``claims.stall``."""
    out = []
    for claim in agg.claims.values():
        due = stall_due(claim, policy)
        if due is not None and now >= due:
            out.append(claim.claim_id)
    return sorted(out)


def handle_claim_stall(agg: Aggregate, ctx: Ctx) -> None:
    """``garda.claim.stalled``: re-check against ``ctx.now``, then open one dispute case."""
    claim = agg.claims.get(ctx.envelope.data.get("claim_id", ""))
    if claim is None or claim.claim_id not in stalled_claims(agg, ctx.policy, ctx.now):
        ctx.outcome = "ignored"
        return
    last = _last_change(claim)
    claim.stall_handled_for = last
    known = set(agg.cases)
    case = _open_dispute(
        agg, ctx, claim, trigger="stalled", reason=f"no status change since {iso(last)}"
    )
    if case.case_id in known:
        ctx.outcome = "ignored"
        return
    ctx.outcome = "dispute_opened"


CLAIM_HANDLERS: dict[str, Callable[[Aggregate, Ctx], None]] = {
    "pmi.claim.filed": handle_claim_filed,
    "pmi.claim.status-changed": handle_claim_status,
    STALLED_COMMAND: handle_claim_stall,
}
