"""Logical topic names (design §2). Full names add ``Settings.topic_prefix``."""

from __future__ import annotations

DEPARTURES = "pmi.departures.v1"
INCIDENTS = "pmi.incidents.v1"
CLAIMS = "pmi.claims.v1"
CASE_ACTIONS = "pmi.case-actions.v1"
CASES = "pmi.cases.v1"
WORKER_STATE = "pmi.worker-state.v1"
ALERTS = "pmi.alerts.v1"
DEADLETTER = "pmi.deadletter.v1"
# Employer watchlist changes (garda.employer.*), keyed by employer key (handlers.employers).
EMPLOYERS = "pmi.employers.v1"
# Internal: commands Garda sends itself (deadline timers), keyed by worker_id so that they
# reach the processor that owns the worker, in order with the worker's other events.
COMMANDS = "garda.commands.v1"

INPUTS = (DEPARTURES, INCIDENTS, CLAIMS, CASE_ACTIONS, COMMANDS)
OUTPUTS = (CASES, WORKER_STATE, ALERTS, DEADLETTER, EMPLOYERS)
ALL = INPUTS + OUTPUTS
COMPACTED = (WORKER_STATE,)

# Which event types each input topic may carry.
TYPES_BY_TOPIC: dict[str, tuple[str, ...]] = {
    DEPARTURES: (
        "pmi.departure.recorded",
        "pmi.departure.failed",
        "pmi.arrival.reported",
        "pmi.contract.extended",
        "pmi.return.recorded",
    ),
    INCIDENTS: ("pmi.incident.reported", "pmi.incident.updated"),
    CLAIMS: ("pmi.claim.filed", "pmi.claim.status-changed"),
    CASE_ACTIONS: (
        "pmi.case.acknowledged",
        "pmi.case.note-added",
        "pmi.case.referred",
        "pmi.case.resolved",
        "pmi.case.reopened",
        # answers to a referral
        "pmi.case.referral-accepted",
        "pmi.case.referral-declined",
    ),
    COMMANDS: (
        "garda.deadline.due",
        "garda.claim.stalled",
        "garda.deadlines.recompute",
        # prevention and aftercare clocks
        "garda.referral.due",
        "garda.reintegration.reminder-due",
    ),
}

# What Garda publishes on pmi.cases.v1 (design §2; the handlers emit them through
# ``Ctx.case_event``).
CASE_EVENT_TYPES: tuple[str, ...] = (
    "garda.case.opened",
    "garda.case.assigned",
    "garda.case.report-attached",
    "garda.case.acknowledged",
    "garda.case.note-added",
    "garda.case.escalated",
    "garda.case.referred",
    "garda.case.resolved",
    "garda.case.reopened",
    "garda.case.updated",
    # referral clocks (handlers.referrals)
    "garda.case.referral-accepted",
    "garda.case.referral-declined",
    "garda.case.referral-lapsed",
    # reintegration (handlers.reintegration)
    "garda.case.claim-linked",
    "garda.case.jkm-claim-missing",
)
