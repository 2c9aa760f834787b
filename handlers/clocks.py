"""Every clock a case carries, in one place: the escalation ladder (``handlers.escalation``),
the referral clock (``handlers.referrals``) and the reintegration JKM reminder
(``handlers.reintegration``). Pure, no I/O.

- :func:`case_next_due` is what the processor stores in ``cases.next_due`` (the earliest of
  the case's clocks) and what ``garda repolicy`` compares with it; the timer scans that
  column.
- :func:`due_commands` gives the timer one ``(type, command id, data)`` per clock due at
  ``now`` for the cases it read: ``garda.deadline.due`` for the ladder,
  ``garda.referral.due`` and ``garda.reintegration.reminder-due`` for the others. Each
  handler re-checks its command against the case as it is then, so duplicated or stale
  commands change nothing (exactly once per deadline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from handlers import escalation, referrals, reintegration
from handlers.model import Case
from handlers.policy import Policy

Command = tuple[str, str, dict[str, Any]]

# The clocks beside the ladder: (next due of a case) and (due commands), one entry each.
_EXTRA_DUE: list[Callable[[Case, Policy], datetime | None]] = [
    lambda case, _policy: referrals.referral_due(case),
    lambda case, _policy: reintegration.reminder_due(case),
]
_EXTRA_COMMANDS: list[Callable[[list[Case], Policy, datetime], list[Command]]] = [
    lambda cases, _policy, now: referrals.due_commands(cases, now),
    lambda cases, _policy, now: reintegration.due_commands(cases, now),
]


def case_next_due(case: Case, policy: Policy) -> datetime | None:
    """The earliest moment any clock of ``case`` is due (None: no clock running)."""
    nxt = escalation.next_deadline(case, policy)
    candidates = [nxt[0]] if nxt else []
    for due in _EXTRA_DUE:
        when = due(case, policy)
        if when is not None:
            candidates.append(when)
    return min(candidates) if candidates else None


def due_commands(cases: Iterable[Case], policy: Policy, now: datetime) -> list[Command]:
    """The commands for every clock of ``cases`` due at ``now``."""
    cases = list(cases)
    out: list[Command] = []
    for data in escalation.due_commands(cases, policy, now):
        cid = f"deadline:{data['case_id']}:{data['deadline']}:{data['level']}:{data['due_at']}"
        out.append((escalation.DEADLINE_DUE, cid, data))
    for commands in _EXTRA_COMMANDS:
        out.extend(commands(cases, policy, now))
    return out
