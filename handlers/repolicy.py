"""Policy changes reach open cases: recompute their deadlines from the current SLAs.

A case's ``ack_due`` and ``resolve_due`` are computed once, when it opens (or its severity
rises, or it reopens), from the SLA policy of that moment. After an SLA change, ``garda
repolicy`` finds the open cases whose stored deadlines differ from what the policy now gives
(:func:`changes_for`) and sends one ``garda.deadlines.recompute`` command per case into the
commands topic; :func:`handle_recompute` applies it in order with the worker's other events.

Rules decided where the design is silent:
- New deadlines are measured from the case's clock start (its opening, or its last reopen),
  as if the case had been opened under the new policy; the escalation level already reached
  is kept, and a level already reached never fires again (handlers.escalation).
- A resolve deadline whose escalation has already fired is kept as it is: the case already
  escalated for "not resolved in time", and a shorter SLA must not make it climb again.
- The command carries a digest of the SLA policy it was computed with; a processor whose
  policy differs refuses it (dead letter): restart the workers with the new policy first.
- Resolved cases are never touched; acknowledged cases get the new ``resolve_due`` (their
  ack clock has stopped, so ``ack_due`` is left as it is).
- The step is recorded on the case's timeline and published as ``garda.case.updated`` with
  the old and new deadlines; a command that finds nothing to change is a no-op
  (outcome ``unchanged``), so re-running ``garda repolicy`` is idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from errors import Conflict
from handlers.cases import case_or_not_found, clock_start, kind_deadlines
from handlers.context import Ctx
from handlers.escalation import UNACKNOWLEDGED
from handlers.model import Aggregate, Case, iso
from handlers.policy import Policy

RECOMPUTE = "garda.deadlines.recompute"
UPDATED = "garda.case.updated"
REASON = "policy changed"


def sla_digest(policy: Policy) -> str:
    """A short fingerprint of the SLA table (what deadlines depend on)."""
    text = repr(sorted(policy.sla.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changes_for(case: Case, policy: Policy) -> dict[str, tuple[datetime | None, datetime]]:
    """``{"ack_due"|"resolve_due": (stored, per policy)}`` for what differs; empty if none."""
    if not case.is_open or case.severity not in policy.sla:
        return {}
    ack_due, resolve_due = kind_deadlines(policy, case.kind, case.severity, clock_start(case))
    out: dict[str, tuple[datetime | None, datetime]] = {}
    if case.status in UNACKNOWLEDGED and case.ack_due != ack_due:
        out["ack_due"] = (case.ack_due, ack_due)
    fired = case.resolve_due is not None and case.resolve_deadline_missed == case.resolve_due
    if not fired and case.resolve_due != resolve_due:
        out["resolve_due"] = (case.resolve_due, resolve_due)
    return out


def command_data(case: Case, policy: Policy) -> dict[str, Any]:
    """The ``garda.deadlines.recompute`` data for ``case``."""
    return {"case_id": case.case_id, "worker_id": case.worker_id, "sla": sla_digest(policy)}


def handle_recompute(agg: Aggregate, ctx: Ctx) -> None:
    data = ctx.envelope.data
    case = case_or_not_found(agg, data.get("case_id"))
    if data.get("sla") != sla_digest(ctx.policy):
        raise Conflict(
            "this processor runs another SLA policy than the one garda repolicy used: "
            "restart the workers with the new policy, then run garda repolicy again"
        )
    changes = changes_for(case, ctx.policy)
    if not changes:
        ctx.outcome = "unchanged"
        return
    detail: dict[str, Any] = {"reason": REASON}
    for name, (old, new) in changes.items():
        setattr(case, name, new)
        detail[f"{name}_from"] = iso(old)
        detail[name] = iso(new)
    case.updated_at = ctx.now
    ctx.case_event(case, UPDATED, actor="garda", detail=detail, at=ctx.now)
    ctx.outcome = "recomputed"


REPOLICY_HANDLERS: dict[str, Callable[[Aggregate, Ctx], None]] = {RECOMPUTE: handle_recompute}
