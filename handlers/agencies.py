"""The agency (P3MI) scorecard: which placement agencies to look at before a licence is
revoked. Pure, no I/O.

Per worker (in the handlers):
- :func:`record_agency` after every accepted departure: the journey's licence
  (``worker.p3mi_license``, None for a departure without one).
- :func:`tag_new_cases`: every case the worker gets during that journey (protection,
  non-procedural departure, claim dispute...) is attributed to the licence
  (``case.detail["p3mi_license"]``), once, at opening (or, when the departure is applied
  after them, the cases opened since its time, once).

Across workers (``infra.agencies`` keeps ``agency_placements`` and reads ``cases`` and
``claims``), per licence over a window ending now (``agencies.window``, 365 d; ``--since``
on the CLI):

- ``placements``: departures through the licence in the window;
- ``cases`` and ``cases_per_100``: protection cases attributed to it opened in the window,
  per 100 placements, in total and by category and by severity;
- ``non_procedural``: non-procedural departures attributed to it;
- ``median_days_to_resolve``: over its resolved protection cases (None: none resolved);
- ``claims_rejected``: rejected BPJS claims of the workers it placed.

:func:`crosses` is the alert rule: a rate of at least ``agencies.alert_rate_per_100`` AND at
least ``agencies.alert_min_placements`` placements (one case in three placements is 33 per
100 but no pattern). ``infra.agencies`` compares the scorecard before and after each batch
under a per-licence lock and raises ``garda.alert.agency-threshold`` to headquarters when a
batch makes a licence cross (below -> at or above): once per crossing, and a replayed batch,
which changes no row, crosses nothing.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from handlers.cases import PROTECTION
from handlers.context import Ctx
from handlers.model import Aggregate
from handlers.policy import Policy

LICENSE = "p3mi_license"  # key in case.detail


def record_agency(agg: Aggregate, ctx: Ctx) -> None:
    """After a departure: the journey's placement agency licence."""
    if ctx.envelope.type != "pmi.departure.recorded" or ctx.outcome == "stale":
        return
    lic = ctx.envelope.data.get("p3mi_license")
    agg.worker.p3mi_license = lic.strip() if isinstance(lic, str) and lic.strip() else None
    if agg.worker.p3mi_license:
        # A departure applied after an incident of its journey (another topic and lane): the
        # cases opened since the departure are attributed as if it had come first.
        for case in agg.cases.values():
            if LICENSE not in case.detail and case.opened_at >= ctx.event_time:
                case.detail[LICENSE] = agg.worker.p3mi_license


def tag_new_cases(before: Aggregate, after: Aggregate) -> None:
    """Attribute the cases the event opened to the journey's licence."""
    lic = after.worker.p3mi_license
    if not lic:
        return
    for case_id, case in after.cases.items():
        if case_id not in before.cases and LICENSE not in case.detail:
            case.detail[LICENSE] = lic


@dataclass(frozen=True)
class CaseRow:
    kind: str
    category: str | None
    severity: str
    opened_at: datetime
    resolved_at: datetime | None = None


@dataclass
class Scorecard:
    license: str
    placements: int = 0
    non_procedural: int = 0
    cases: int = 0
    by_category: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)
    median_days_to_resolve: float | None = None
    claims_rejected: int = 0

    def per_100(self, n: int) -> float | None:
        return round(100.0 * n / self.placements, 2) if self.placements else None

    @property
    def cases_per_100(self) -> float | None:
        return self.per_100(self.cases)

    def public(self) -> dict[str, Any]:
        return {
            "license": self.license,
            "placements": self.placements,
            "cases": self.cases,
            "cases_per_100": self.cases_per_100,
            "by_category": {
                k: {"cases": v, "per_100": self.per_100(v)}
                for k, v in sorted(self.by_category.items())
            },
            "by_severity": {
                k: {"cases": v, "per_100": self.per_100(v)}
                for k, v in sorted(self.by_severity.items())
            },
            "non_procedural": self.non_procedural,
            "median_days_to_resolve": self.median_days_to_resolve,
            "claims_rejected": self.claims_rejected,
        }


def scorecard(
    license: str,
    *,
    placements: int,
    non_procedural: int,
    cases: list[CaseRow],
    claims_rejected: int,
) -> Scorecard:
    """The scorecard of one licence from its rows in the window."""
    protection = [c for c in cases if c.kind == PROTECTION]
    by_cat = Counter(c.category or "none" for c in protection)
    by_sev = Counter(c.severity for c in protection)
    days = [
        (c.resolved_at - c.opened_at).total_seconds() / 86400
        for c in protection
        if c.resolved_at is not None
    ]
    return Scorecard(
        license=license,
        placements=placements,
        non_procedural=non_procedural,
        cases=len(protection),
        by_category=dict(by_cat),
        by_severity=dict(by_sev),
        median_days_to_resolve=round(statistics.median(days), 2) if days else None,
        claims_rejected=claims_rejected,
    )


def crosses(card: Scorecard, policy: Policy) -> bool:
    """At or above the alert rate, with at least the minimum volume."""
    rule = policy.prevention.agencies
    rate = card.cases_per_100
    return (
        card.placements >= rule.alert_min_placements
        and rate is not None
        and rate >= rule.alert_rate_per_100
    )
