"""The chaos run's input and its reference: what was sent, and what Garda must end up with.

The input is the simulator's traffic, split by topic into phases (journeys, then incidents,
then claims, then responders' case actions), with about one record in a hundred made invalid
on purpose. Phases make the order of a worker's events across topics deterministic (Kafka
orders them within a topic only), so the reference can be computed from the same input with
the same pure handlers (``handlers.dispatch.handle``), in the same order, in this process.

Escalations depend on time, not on the input, so the reference leaves them out: the fields
they change are not compared (:data:`TIME_DEPENDENT_CASE_KEYS`), and the run checks them
apart (once per level, none missed).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from errors import GardaError
from handlers.dispatch import handle
from handlers.model import Aggregate, Worker
from handlers.policy import Policy
from infra.simulate import traffic
from schemas import topics
from schemas.envelope import decode

# Case document keys an escalation (or the processor's clock) may change.
# (escalated_to and resolve_deadline_missed are set by the escalation that fired, like the
# level: typed case fields since they left ``detail``.)
TIME_DEPENDENT_CASE_KEYS = frozenset(
    {
        "escalation_level",
        "updated_at",
        "detail",
        "acknowledged_at",
        "resolved_at",
        "escalated_to",
        "resolve_deadline_missed",
    }
)
TIME_DEPENDENT_WORKER_KEYS = frozenset({"updated_at"})
INVALID_EVERY = 100  # about one record in a hundred is invalid on purpose


@dataclass
class Record:
    topic: str  # logical topic
    key: str
    value: bytes
    valid: bool
    ident: str  # (source, id) as "source|id" for valid records, a marker for invalid ones


@dataclass
class Phase:
    name: str
    records: list[Record] = field(default_factory=list)

    @property
    def valid(self) -> list[Record]:
        return [r for r in self.records if r.valid]

    @property
    def invalid(self) -> list[Record]:
        return [r for r in self.records if not r.valid]


def _ident(value: bytes) -> str:
    doc = json.loads(value)
    return f"{doc['source']}|{doc['id']}"


def _spoil(rec: Record, n: int, rnd: random.Random) -> Record:
    """An invalid copy of ``rec`` (a marker in its bytes identifies it afterwards)."""
    marker = f"chaos-invalid-{n:06d}"  # fixed width: no marker inside another (99, 9999)
    doc = json.loads(rec.value)
    kind = rnd.choice(("json", "field", "type"))
    if kind == "json":
        value = f'{{"not json": {marker}'.encode()
    elif kind == "field":
        doc["id"] = marker
        doc["data"] = {k: v for k, v in doc["data"].items() if k != "worker_id"}
        value = json.dumps(doc).encode()
    else:
        doc["id"] = marker
        doc["type"] = "pmi.unknown.chaos"
        value = json.dumps(doc).encode()
    return Record(rec.topic, rec.key, value, False, marker)


def journey_phases(seed: int, n: int) -> list[Phase]:
    """Phases 1 to 3 (departures topic, incidents, claims) from ``n`` simulated events."""
    by_topic = {t: Phase(name) for t, name in _PHASES}
    rnd = random.Random(seed)
    for i, (topic, key, value) in enumerate(traffic(seed)):
        if i >= n:
            break
        rec = Record(topic, key, value, True, _ident(value))
        if i % INVALID_EVERY == INVALID_EVERY - 1:
            rec = _spoil(rec, i, rnd)
        by_topic[topic].records.append(rec)
    return [by_topic[t] for t, _ in _PHASES]


_PHASES = (
    (topics.DEPARTURES, "journeys"),
    (topics.INCIDENTS, "incidents"),
    (topics.CLAIMS, "claims"),
)


class Reference:
    """The read model the pure handlers give for the input, applied in phase order."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.aggs: dict[str, Aggregate] = {}
        self.applied: dict[str, int] = {}  # worker -> events that changed or were handled
        self.rejected: set[str] = set()  # idents the rules refuse (dead letters too)

    def apply(self, records: Iterable[Record]) -> None:
        now = datetime.now(UTC)
        for rec in records:
            if not rec.valid:
                continue
            env = decode(rec.key.encode(), rec.value, [])
            agg = self.aggs.get(env.subject) or Aggregate(worker=Worker(worker_id=env.subject))
            try:
                result = handle(agg, env, self.policy, now)
            except GardaError:
                self.rejected.add(rec.ident)
                continue
            result.aggregate.exists = True
            self.aggs[env.subject] = result.aggregate
            self.applied[env.subject] = self.applied.get(env.subject, 0) + 1

    def actions(self, seed: int, actor_post: dict[str, str] | None = None) -> Phase:
        """Phase 4: responders act on the open cases (acknowledge 60 %, then resolve a third
        of those; a note on 10 %), as the API would publish them."""
        rnd = random.Random(seed + 1)
        phase = Phase("case actions")
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for wid in sorted(self.aggs):
            for case in sorted(self.aggs[wid].cases.values(), key=lambda c: c.case_id):
                if not case.is_open:
                    continue
                post = (actor_post or {}).get(case.post_id, case.post_id)
                base = {"case_id": case.case_id, "worker_id": wid, "actor": "chaos-officer"}
                base |= {"post_id": post, "at": stamp}
                steps: list[tuple[str, dict[str, Any]]] = []
                roll = rnd.random()
                if roll < 0.6:
                    steps.append(("pmi.case.acknowledged", {}))
                    if rnd.random() < 0.33:
                        steps.append(("pmi.case.resolved", {"resolution": "assisted home"}))
                elif roll < 0.7:
                    steps.append(("pmi.case.note-added", {"note": "called the employer"}))
                for type_, extra in steps:
                    value = json.dumps(
                        {
                            "specversion": "1.0",
                            "id": str(uuid.uuid4()),
                            "source": "chaos/desk",
                            "type": type_,
                            "subject": wid,
                            "time": stamp,
                            "datacontenttype": "application/json",
                            "data": {**base, **extra},
                        }
                    ).encode()
                    phase.records.append(
                        Record(topics.CASE_ACTIONS, wid, value, True, _ident(value))
                    )
        return phase

    def worker_docs(self) -> dict[str, dict[str, Any]]:
        return {
            wid: _without(agg.worker.to_doc(), TIME_DEPENDENT_WORKER_KEYS)
            for wid, agg in self.aggs.items()
        }

    def case_docs(self) -> dict[str, dict[str, Any]]:
        return {
            c.case_id: _without(c.to_doc(), TIME_DEPENDENT_CASE_KEYS)
            for agg in self.aggs.values()
            for c in agg.cases.values()
        }


def _without(doc: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


def compare(expected: dict[str, dict], actual: dict[str, dict]) -> dict[str, Any]:
    """Differences between two ``{id: doc}`` maps: missing, extra, and differing ids."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    differing = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    sample = None
    if differing:
        k = differing[0]
        sample = {
            "id": k,
            "fields": sorted(
                f
                for f in set(expected[k]) | set(actual[k])
                if expected[k].get(f) != actual[k].get(f)
            ),
        }
    return {
        "missing": len(missing),
        "extra": len(extra),
        "differing": len(differing),
        "first_missing": missing[:3],
        "first_extra": extra[:3],
        "first_difference": sample,
    }
