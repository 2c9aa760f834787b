"""The per-event context handlers write their effects through.

A handler gets ``(agg, ctx)``: ``ctx`` carries the input envelope, the policy, the processor's
clock and the effects collected so far. Every id it derives is a function of the input event's
(source, id) and a label, so a replay derives the same ids and the database dedups them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from handlers.model import Aggregate, Case, Effects, OutputEvent, TimelineEntry, iso, stable_id
from handlers.policy import Policy
from schemas import topics
from schemas.envelope import Envelope


@dataclass
class Ctx:
    envelope: Envelope
    policy: Policy
    now: datetime
    effects: Effects = field(default_factory=Effects)
    outcome: str = "ignored"
    # When Garda received the event: its Kafka record timestamp (replay-stable, so
    # ``garda rebuild`` decides the same); None: ``now``.
    received_at: datetime | None = None
    # Employer keys on the watchlist (cross-worker state the processor loads for the batch;
    # ``handlers.employers``). Empty: none known.
    watchlisted: frozenset[str] = frozenset()

    # Derived once (``__post_init__``; the envelope, the policy and the clocks do not change
    # while a handler runs):
    # - when Garda learned of the event (never after ``now``);
    received: datetime = field(init=False, repr=False, compare=False)
    # - the event is dated more than ``policy.intake.max_event_age`` before it was received
    #   (a late report, or a wrong clock: 1970);
    late_report: bool = field(init=False, repr=False, compare=False)
    # - when the event happened as far as Garda trusts it: its ``time``, never in the
    #   future, and for a late report the time Garda received it, so its clocks start when
    #   Garda learned of it.
    event_time: datetime = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        now = self.now
        received = min(self.received_at, now) if self.received_at is not None else now
        t = self.envelope.time
        late = t is not None and t < received - self.policy.intake.max_event_age
        self.received = received
        self.late_report = late
        self.event_time = now if t is None else received if late else min(t, now)

    def derive_id(self, *labels: str) -> str:
        return stable_id(self.envelope.source, self.envelope.id, *labels)

    def case_event(
        self,
        case: Case,
        type_: str,
        *,
        actor: str | None = "garda",
        detail: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record one step of a case: a timeline row and a ``garda.case.*`` event on pmi.cases.v1.

        The event's data is the case's public JSON (design §6) plus ``event`` (the detail,
        actor, at) so consumers see the whole case after the step.
        """
        n = len(self.effects.timeline)
        at = at or self.event_time
        detail = dict(detail or {})
        entry = TimelineEntry(
            entry_id=self.derive_id("timeline", case.case_id, str(n)),
            case_id=case.case_id,
            at=at,
            type=type_,
            actor=actor,
            detail=detail,
        )
        self.effects.timeline.append(entry)
        if type_.startswith("garda.case."):
            data = case.public()
            data["event"] = {"actor": actor, "at": iso(at), **detail}
            self.effects.events.append(
                OutputEvent(
                    topic=topics.CASES,
                    type=type_,
                    key=case.worker_id,
                    data=data,
                    id=self.derive_id("case-event", case.case_id, type_, str(n)),
                    subject=case.worker_id,
                )
            )

    def alert(
        self, kind: str, worker_id: str, data: dict[str, Any], case: Case | None = None
    ) -> None:
        """Raise ``garda.alert.<kind>`` on pmi.alerts.v1 (what alerting hooks deliver)."""
        payload = {"alert": kind, "worker_id": worker_id, **data}
        if case is not None:
            payload.setdefault("case_id", case.case_id)
            payload.setdefault("post_id", case.post_id)
            payload.setdefault("severity", case.severity)
            payload.setdefault("kind", case.kind)
        n = len(self.effects.events)
        self.effects.events.append(
            OutputEvent(
                topic=topics.ALERTS,
                type=f"garda.alert.{kind}",
                key=worker_id,
                data=payload,
                id=self.derive_id("alert", kind, str(n)),
                subject=worker_id,
            )
        )

    def worker_snapshot(self, agg: Aggregate) -> None:
        """Publish the worker's latest state on the compacted pmi.worker-state.v1."""
        w = agg.worker
        self.effects.events.append(
            OutputEvent(
                topic=topics.WORKER_STATE,
                type="garda.worker.state",
                key=w.worker_id,
                data=agg.worker_public(),
                id=self.derive_id("worker-state"),
                subject=w.worker_id,
            )
        )
