"""``BatchProcessor.outbox_row``: an output event's row holds exactly what the ordinary
``Envelope`` and ``encode`` give (the row's envelope is built without the dataclass's
``__init__``)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

from handlers.dispatch import handle
from handlers.model import Aggregate, OutputEvent, Worker
from infra.settings import Settings
from infra.simulate import traffic
from schemas.envelope import GARDA_SOURCE, Envelope, decode, encode
from streams.processor import BatchProcessor, _output_envelope
from tests.unit.factories import POLICY


def _outputs(n: int = 400) -> list[OutputEvent]:
    aggs: dict[str, Aggregate] = {}
    out: list[OutputEvent] = []
    for t, k, v in itertools.islice(traffic(4), n):
        env = decode(k.encode(), v, [], topic=t)
        agg = aggs.get(env.subject) or Aggregate(Worker(env.subject))
        result = handle(agg, env, POLICY, env.time or datetime.now(UTC))
        aggs[env.subject] = result.aggregate
        out.extend(result.effects.events)
    return out


def test_rows_hold_what_envelope_and_encode_give() -> None:
    processor = BatchProcessor(None, Settings(topic_prefix="t."), POLICY)  # type: ignore[arg-type]
    events = _outputs()
    events.append(
        OutputEvent(topic="pmi.alerts.v1", type="garda.alert.x", key="K", data={}, id="i")
    )
    assert {e.topic for e in events} >= {"pmi.cases.v1", "pmi.worker-state.v1", "pmi.alerts.v1"}
    for now in (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=timezone(timedelta(hours=7))),
    ):
        for ev in events:
            ordinary = Envelope(
                id=ev.id,
                source=GARDA_SOURCE,
                type=ev.type,
                subject=ev.subject or ev.key,
                data=ev.data,
                time=now,
            )
            assert _output_envelope(ev, now) == ordinary
            row = processor.outbox_row(ev, now)
            assert row.value == encode(ordinary)
            assert row.event_id == f"{ev.topic}:{ev.id}"
            assert row.topic == f"t.{ev.topic}" and row.key == ev.key.encode()
            assert row.headers == [("content-type", b"application/cloudevents+json")]
