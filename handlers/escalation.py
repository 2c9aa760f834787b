"""The escalation ladder (design §5): which deadline a case misses next, and what missing it does.

Pure rules, no I/O. The timer (``streams``) asks :func:`due_commands` which cases are due and
sends itself one ``garda.deadline.due`` command per case; :func:`handle_deadline_due` applies
such a command after re-checking it against the case as it is now, so a stale, early or
duplicated command changes nothing.

Levels: 0 the assigned post, 1 its head of mission, 2 headquarters. Never above 2.

Clocks (all measured from the case's *clock start*, see :func:`clock_start`):

- **ack clock** (status ``open`` or ``reopened``, i.e. not acknowledged): level 1 at
  ``ack_due`` (= clock start + ``sla.ack``); level 2 at clock start + ``sla.level2`` when the
  severity's SLA has a ``level2``. A severity without ``level2`` (``low`` by default) has no
  level 2 on the ack clock: only its resolve deadline can bring it to level 2.
  Acknowledging stops the ack clock.
- **resolve clock** (every unresolved case, acknowledged included): at ``resolve_due`` the case
  goes one level above the level it has then (at most 2). It fires once per ``resolve_due``:
  the missed value is remembered in ``case.resolve_deadline_missed``, so a missed
  resolve deadline does not climb the whole ladder on successive timer ticks.
- Resolving stops every clock. Reopening restarts them: ``opened_at`` stays, new
  ``ack_due``/``resolve_due`` are computed from the reopen time (which becomes the clock start,
  kept in ``case.clock_started_at``), and the escalation level is kept (a level
  already reached never fires again, so a reopened case at level 1 can only go on to 2).
- A level already reached never fires again; exactly once per level.
- When several deadlines are due, the earliest fires first (on a tie the ack clock first);
  the next one fires on the next timer tick, from the level the first one left.
- The escalation's timeline row and event are stamped with the processor's clock
  (``ctx.now``), not the deadline; the missed deadline is in the event detail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from errors import Unacceptable
from handlers.cases import case_or_not_found, clock_start
from handlers.context import Ctx
from handlers.model import Aggregate, Case, iso
from handlers.policy import Policy
from handlers.routing import escalation_target

ACK = "ack"
RESOLVE = "resolve"
MAX_LEVEL = 2
DEADLINE_DUE = "garda.deadline.due"
ESCALATED = "garda.case.escalated"
UNACKNOWLEDGED = ("open", "reopened")

REASONS = {ACK: "not acknowledged in time", RESOLVE: "not resolved in time"}


Deadline = tuple[datetime, str, int]


def level2_due(case: Case, policy: Policy) -> datetime | None:
    """The ack clock's level-2 deadline (clock start + ``sla.level2``), or None if no level 2."""
    sla = policy.prevention.kind_sla(case.kind) or policy.sla.get(case.severity)
    if sla is None or sla.level2 is None:
        return None
    return clock_start(case) + sla.level2


def _resolve_clock_armed(case: Case) -> bool:
    return case.resolve_due is not None and case.resolve_deadline_missed != case.resolve_due


def deadline_for(case: Case, policy: Policy, deadline: str, level: int) -> datetime | None:
    """The current moment ``deadline`` would take ``case`` to ``level``, or None if it cannot.

    None when the case is resolved, the level is already reached or out of range, the ack clock
    is stopped (acknowledged), the severity has no level 2, or the resolve clock has already
    fired for this ``resolve_due`` or would lead to another level.
    """
    if not case.is_open or not (case.escalation_level < level <= MAX_LEVEL):
        return None
    if deadline == ACK:
        if case.status not in UNACKNOWLEDGED:
            return None
        if level == 1:
            return case.ack_due
        return level2_due(case, policy)
    if deadline == RESOLVE:
        if level != case.escalation_level + 1 or not _resolve_clock_armed(case):
            return None
        return case.resolve_due
    return None


def next_deadline(case: Case, policy: Policy) -> Deadline | None:
    """The next moment ``case`` must escalate: ``(when, "ack"|"resolve", level)``, or None."""
    if not case.is_open or case.escalation_level >= MAX_LEVEL:
        return None
    candidates: list[tuple[datetime, int, int, str]] = []  # (when, clock order, level, clock)
    for level in range(case.escalation_level + 1, MAX_LEVEL + 1):
        when = deadline_for(case, policy, ACK, level)
        if when is not None:
            candidates.append((when, 0, level, ACK))
    when = deadline_for(case, policy, RESOLVE, case.escalation_level + 1)
    if when is not None:
        candidates.append((when, 1, case.escalation_level + 1, RESOLVE))
    if not candidates:
        return None
    when, _, level, clock = min(candidates)
    return when, clock, level


def due_commands(cases: Iterable[Case], policy: Policy, now: datetime) -> list[dict[str, Any]]:
    """The ``garda.deadline.due`` command data for every case whose next deadline is <= ``now``.

    One command per case (its next deadline), earliest first. A case with several missed
    deadlines gets the next one on the following tick, once the first has been applied.
    """
    due: list[tuple[datetime, str, dict[str, Any]]] = []
    for case in cases:
        nxt = next_deadline(case, policy)
        if nxt is None or nxt[0] > now:
            continue
        when, clock, level = nxt
        due.append(
            (
                when,
                case.case_id,
                {
                    "case_id": case.case_id,
                    "worker_id": case.worker_id,
                    "due_at": iso(when),
                    "deadline": clock,
                    "level": level,
                },
            )
        )
    due.sort(key=lambda item: (item[0], item[1]))
    return [data for _, _, data in due]


def handle_deadline_due(agg: Aggregate, ctx: Ctx) -> None:
    """Apply a ``garda.deadline.due`` command, or do nothing if it no longer holds.

    Unknown case: ``NotFound``; a deadline other than ack/resolve or a level outside 1..2 (the
    schema already refuses both): ``Unacceptable``. Otherwise a no-op with outcome
    ``stale-deadline`` when
    the case is resolved, acknowledged (for an ack deadline), already at or above the level,
    or the deadline is not (or no longer) due at ``ctx.now``.
    """
    data = ctx.envelope.data
    case = case_or_not_found(agg, data.get("case_id"))
    clock = data.get("deadline")
    level = data.get("level")
    if (
        clock not in REASONS
        or not isinstance(level, int)
        or isinstance(level, bool)
        or not 1 <= level <= MAX_LEVEL
    ):
        raise Unacceptable(f"invalid deadline command ({clock!r}, level {level!r})")
    when = deadline_for(case, ctx.policy, clock, level)
    if when is None or when > ctx.now:
        ctx.outcome = "stale-deadline"
        return

    target = escalation_target(ctx.policy, case.post_id, level)
    case.escalation_level = level
    case.escalated_to = target
    if clock == RESOLVE:
        case.resolve_deadline_missed = when
    case.updated_at = ctx.now
    detail = {
        "level": level,
        "reason": REASONS[clock],
        "deadline": clock,
        "missed_deadline": iso(when),
        "escalated_to": target,
    }
    ctx.case_event(case, ESCALATED, actor="garda", detail=detail, at=ctx.now)
    ctx.alert("escalated", case.worker_id, detail, case=case)
    ctx.outcome = "escalated"


DEADLINE_HANDLERS: dict[str, Callable[[Aggregate, Ctx], None]] = {
    DEADLINE_DUE: handle_deadline_due,
}
