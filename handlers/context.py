"""The per-event context handlers write their effects through.

A handler gets ``(agg, ctx)``: ``ctx`` carries the input envelope, the policy, the processor's
clock and the effects collected so far. Every id it derives is a function of the input event's
(source, id) and a label, so a replay derives the same ids and the database dedups them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from handlers.model import (
    ID_ESCAPE,
    ID_SEPARATOR,
    Aggregate,
    Case,
    Effects,
    OutputEvent,
    TimelineEntry,
    id_digest,
    iso,
    stable_id,
)
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
    # False: a worker-state snapshot that surely fits in a Kafka record is not built, only
    # counted (``garda rebuild`` without ``--republish`` writes no output event: they were
    # published when the log was first processed). An alert's id counts the snapshots not
    # built, so it is the id live derives; everything else is as with True.
    outputs: bool = True
    _unbuilt: int = field(default=0, init=False, repr=False, compare=False)

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
    # - for ``derive_id``, on its first call: the event's source and id joined as
    #   ``stable_id`` joins them, with the separator after them ("": not yet; "-": a part
    #   holds the separator or the escape, ``stable_id`` joins each id).
    _id_head: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # min(a, b) written out (a unless b < a: the same object on a tie), without the calls
        now = self.now
        received_at = self.received_at
        received = now if received_at is None or now < received_at else received_at
        t = self.envelope.time
        late = t is not None and t < received - self.policy.intake.max_event_age
        self.received = received
        self.late_report = late
        self.event_time = now if t is None else received if late else now if now < t else t

    def derive_id(self, *labels: str) -> str:
        """``stable_id(source, id, *labels)`` of the event: the text hashed here, from the
        source and id joined once per event, when it holds no escape and exactly the
        separators between its parts (what ``stable_id`` hashes then)."""
        head = self._id_head
        if not head:
            env = self.envelope
            head = env.source + ID_SEPARATOR + env.id + ID_SEPARATOR
            if ID_ESCAPE in head or head.count(ID_SEPARATOR) != 2:
                head = "-"
            self._id_head = head
        if labels and head != "-":
            text = head + ID_SEPARATOR.join(labels)
            if ID_ESCAPE not in text and text.count(ID_SEPARATOR) == len(labels) + 1:
                return id_digest(text)
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
        effects = self.effects
        n = str(len(effects.timeline))
        at = at or self.event_time
        detail = dict(detail or {})
        case_id = case.case_id
        # Positional constructor calls (the fields' order): keywords cost ~0.15 µs a call.
        entry_id = self.derive_id("timeline", case_id, n)
        effects.timeline.append(TimelineEntry(entry_id, case_id, at, type_, actor, detail))
        if type_.startswith("garda.case."):
            data = case.public()
            data["event"] = {"actor": actor, "at": iso(at), **detail}
            worker_id = case.worker_id
            event_id = self.derive_id("case-event", case_id, type_, n)
            # topic, type, key, data, id, subject
            effects.events.append(
                OutputEvent(topics.CASES, type_, worker_id, data, event_id, worker_id)
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
        n = len(self.effects.events) + self._unbuilt
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
        if not self.outputs and snapshot_surely_fits(agg):
            self._unbuilt += 1
            return
        worker_id = agg.worker.worker_id
        event_id = self.derive_id("worker-state")
        # topic, type, key, data, id, subject (positional: see case_event)
        self.effects.events.append(
            OutputEvent(
                topics.WORKER_STATE,
                "garda.worker.state",
                worker_id,
                agg.worker_public(),
                event_id,
                worker_id,
            )
        )


# A snapshot is skipped (``Ctx.outputs`` False) only when its record is certainly smaller than
# what ``garda rebuild`` checks an output event against before it writes a batch without the
# live path (``streams.rebuild``: six bytes per character of its JSON at worst, plus 8 KB,
# under the 1,000,000-byte record limit): so a skipped snapshot never hides one that would
# have sent a batch through the live path.
_SNAPSHOT_LIMIT = (1_000_000 - 8192) // 6
_SNAPSHOT_FIXED = 512  # the keys, punctuation, booleans, nulls and insured_until's time


def snapshot_surely_fits(agg: Aggregate) -> bool:
    """Whether ``worker_public(agg)``'s event is surely under ``_SNAPSHOT_LIMIT`` bytes of
    JSON (with its id, type and key), counted from its strings, six bytes per character at
    worst (a control character's escape); every case id counts, open or not."""
    w = agg.worker
    chars = 2 * len(w.worker_id) + 40 + 18 + len(w.state or "")
    chars += len(w.country or "") + len(w.region or "")
    for r in w.non_procedural_reasons:
        chars += len(r) + 3
    for case_id in agg.cases:
        chars += len(case_id) + 3
    return 6 * chars + _SNAPSHOT_FIXED < _SNAPSHOT_LIMIT
