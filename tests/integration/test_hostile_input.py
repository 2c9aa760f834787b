"""Hostile input: thousands of generated and mutated events over Kafka and HTTP against one
real worker (Tansu, PostgreSQL). Asserts that the worker stays alive and processing, that
every rejected input is on pmi.deadletter.v1 exactly once with a precise reason, that no valid
event is lost, and that a valid event sent after the poison is processed within seconds.

The corpus comes from hypothesis strategies (derandomized: the same inputs every run):
valid departures and incidents, and mutations of them (missing, ill-typed and unknown fields,
lone surrogates in ids, field names and text, control characters in ids, overflowing
instants, huge text, truncated, non-UTF-8, deeply nested and duplicate-key JSON, NaN,
key/subject mismatches, types on the wrong topic).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from infra.settings import Settings
from schemas import topics
from tests.integration.harness import (
    WorkerProcess,
    db_fetch,
    eventually,
    new_token,
    read_events,
)

KAFKA_INPUTS = 3000
HTTP_INPUTS = 600
T = "2026-11-20T08:00:00Z"


@dataclass
class Hostile:
    label: str  # the mutation ("valid" for none)
    topic: str  # logical input topic
    key: bytes | None
    value: bytes
    valid: bool
    source_id: tuple[str, str] | None = None  # for valid events: the dedup key
    field: str | None = None  # the field a precise reason must name, when known


def _departure(n: int, worker: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"hostile-dep-{n:07d}",
        "source": "siskop2mi/hostile",
        "type": "pmi.departure.recorded",
        "subject": worker,
        "time": T,
        "data": {
            "worker_id": worker,
            "destination_country": "TW",
            "departed_at": T,
            "scheme": "p2p",
            "employer_type": "legal_entity",
            "visa_type": "work",
            "nik": "3201010101010001",
            "full_name": "Siti Aminah",
        },
    }


def _incident(n: int, worker: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"hostile-inc-{n:07d}",
        "source": "kp2mi/hostile",
        "type": "pmi.incident.reported",
        "subject": worker,
        "time": T,
        "data": {
            "incident_id": f"HOST-{n:07d}",
            "worker_id": worker,
            "category": "unpaid_wages",
            "occurred_at": T,
            "country": "MY",
            "reporter_type": "hotline",
            "description": "generated",
        },
    }


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# (label, mutate(doc) -> (value bytes, key override or None, field named by the reason))
KINDS = (
    "missing",
    "ill-typed",
    "unknown-field",
    "surrogate-id",
    "surrogate-name",
    "surrogate-text",
    "control-id",
    "overflow-time",
    "overflow-field",
    "long-text",
    "truncated",
    "not-utf8",
    "empty",
    "nested",
    "duplicate-key",
    "nan",
    "key-mismatch",  # Kafka only: HTTP has no key
    "wrong-topic-type",
    "not-object",
)


def _mutations(
    draw: st.DrawFn, doc: dict[str, Any], kind: str
) -> tuple[str, bytes, bytes | None, str | None]:
    data = doc["data"]
    if kind == "missing":
        name = draw(st.sampled_from(["id", "source", "subject", "data", "specversion"]))
        del doc[name]
        return kind, _dumps(doc), None, name
    if kind == "ill-typed":
        name = draw(st.sampled_from(sorted(data)))
        data[name] = draw(st.one_of(st.integers(), st.lists(st.text(max_size=3)), st.none()))
        return kind, _dumps(doc), None, None  # a worker_id change may be named as subject
    if kind == "unknown-field":
        data[draw(st.text(st.characters(codec="ascii"), min_size=1, max_size=8)) + "_x"] = 1
        return kind, _dumps(doc), None, "data."
    if kind == "surrogate-id":
        doc["id"] += draw(st.sampled_from(["\udfff", "\ud800", "\udc80x"]))
        return kind, _dumps(doc), None, "id"
    if kind == "surrogate-name":
        data["x\udfff"] = "y"
        return kind, _dumps(doc), None, "data.x"
    if kind == "surrogate-text":
        name = "description" if "description" in data else "full_name"
        data[name] = "a\ud800b"
        return kind, _dumps(doc), None, f"data.{name}"
    if kind == "control-id":
        doc["id"] += draw(st.sampled_from(["\x1f", "\x01", "\n", "\x7f", "\x85"]))
        return kind, _dumps(doc), None, "id"
    if kind == "overflow-time":
        doc["time"] = draw(
            st.sampled_from(
                ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "33658-01-01T00:00:00Z"]
            )
        )
        return kind, _dumps(doc), None, "time"
    if kind == "overflow-field":
        name = "departed_at" if "departed_at" in data else "occurred_at"
        data[name] = "0001-01-01T00:00:00+23:59"
        return kind, _dumps(doc), None, f"data.{name}"
    if kind == "long-text":
        size = draw(st.sampled_from([5001, 20_000, 200_000]))
        if "description" in data:
            data["description"] = "d" * size
            return kind, _dumps(doc), None, "data.description"
        data["full_name"] = "n" * size
        return kind, _dumps(doc), None, "data.full_name"
    if kind == "truncated":
        raw = _dumps(doc)
        return kind, raw[: draw(st.integers(1, len(raw) - 1))], None, None
    if kind == "not-utf8":
        raw = _dumps(doc)
        at = draw(st.integers(0, len(raw) - 1))
        return kind, raw[:at] + b"\xff\xfe" + raw[at:], None, None
    if kind == "empty":
        return kind, draw(st.sampled_from([b"", b"   ", b"null"])), None, None
    if kind == "nested":
        depth = draw(st.sampled_from([500, 5000, 50_000]))
        return kind, b'{"data":' + b"[" * depth + b"]" * depth + b"}", None, None
    if kind == "duplicate-key":
        raw = _dumps(doc)
        return kind, raw[:-1] + b', "id": "again"}', None, None
    if kind == "nan":
        data["amount"] = float("nan")
        return kind, json.dumps(doc).encode(), None, None
    if kind == "key-mismatch":
        return kind, _dumps(doc), b"someone-else", "key"
    if kind == "wrong-topic-type":
        doc["type"] = draw(st.sampled_from(["pmi.claim.filed", "pmi.teleported", "garda.x"]))
        return kind, _dumps(doc), None, "type"
    return kind, _dumps([doc]), None, None


@st.composite
def hostile(draw: st.DrawFn, n: int, kind: str | None) -> Hostile:
    worker = f"W-H-{n:07d}"  # fixed width: the draws must not depend on n
    make, topic = draw(
        st.sampled_from([(_departure, topics.DEPARTURES), (_incident, topics.INCIDENTS)])
    )
    doc = make(n, worker)
    text = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
    if "description" in doc["data"]:
        doc["data"]["description"] = draw(text.filter(str.strip))
        doc["data"]["category"] = draw(st.sampled_from(["unpaid_wages", "illness", "other"]))
    else:
        doc["data"]["full_name"] = draw(text.filter(str.strip))
        doc["data"]["destination_country"] = draw(st.sampled_from(["TW", "HK", "MY", "QA"]))
    if kind is None:
        source_id = (doc["source"], doc["id"])
        return Hostile("valid", topic, worker.encode(), _dumps(doc), True, source_id)
    label, value, key, field = _mutations(draw, doc, kind)
    return Hostile(label, topic, key or worker.encode(), value, False, field=field)


def corpus(total: int, offset: int, *, http: bool = False) -> list[Hostile]:
    """About 30 % valid events, the rest spread over the mutation kinds."""
    kinds = [k for k in KINDS if not (http and k == "key-mismatch")]
    out: list[Hostile] = []
    out += _generate(total * 3 // 10, offset, None)
    for i, kind in enumerate(kinds):
        out += _generate((total - len(out)) // (len(kinds) - i), offset + len(out), kind)
    return out


def _generate(count: int, offset: int, kind: str | None) -> list[Hostile]:
    out: list[Hostile] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        out.append(data.draw(hostile(offset + len(out), kind)))

    collect()
    return out


def _precise(error: str, item: Hostile) -> bool:
    if error.startswith(("internal error", "refused by the database")):
        return False
    return item.field is None or item.field in error


@pytest.fixture
async def worker(settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    """One worker with the per-client limit of failed requests off: this test sends hundreds
    of bad requests from one address on purpose (the limit has its own tests)."""
    w = WorkerProcess(settings, tmp_path, "w1", GARDA_FAILED_REQUESTS_PER_MINUTE="0")
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def test_hostile_input_over_kafka_and_http(settings: Settings, worker: WorkerProcess) -> None:
    kafka = corpus(KAFKA_INPUTS, 0)
    http = corpus(HTTP_INPUTS, 100_000, http=True)
    started = time.monotonic()

    # Kafka: every input with its (partition, offset)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=4 << 20
    )
    await producer.start()
    placed: dict[tuple[int, int], Hostile] = {}
    try:
        futures = [
            (item, await producer.send(settings.topic(item.topic), value=item.value, key=item.key))
            for item in kafka
        ]
        for item, fut in futures:
            meta = await fut
            placed[(meta.partition, meta.offset, settings.topic(item.topic))] = item
    finally:
        await producer.stop()

    # HTTP: structured-mode POSTs, four at a time
    _, token = await new_token(settings, hq=True, sources=["siskop2mi/hostile", "kp2mi/hostile"])
    statuses: Counter = Counter()
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/cloudevents+json"}
    ) as http_session:
        sem = asyncio.Semaphore(4)

        async def post(item: Hostile) -> None:
            async with sem, http_session.post(f"{worker.url}/api/events", data=item.value) as r:
                statuses[(item.valid, r.status)] += 1
                if not item.valid:
                    assert 400 <= r.status < 500, (item.label, r.status, await r.text())

        await asyncio.gather(*(post(i) for i in http))
    assert statuses[(True, 202)] == sum(i.valid for i in http), statuses

    # a valid event after the poison: processed within seconds
    probe = _departure(999_999, "W-H-PROBE")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(topics.DEPARTURES), value=_dumps(probe), key=b"W-H-PROBE"
        )
    finally:
        await producer.stop()
    sent_probe = time.monotonic()

    async def processed() -> set[tuple[str, str]]:
        rows = await db_fetch(settings.database_url, "SELECT source, id FROM processed_events")
        return {(r["source"], r["id"]) for r in rows}

    await eventually(
        processed, lambda s: (probe["source"], probe["id"]) in s, timeout=90, interval=0.1
    )
    probe_latency = time.monotonic() - sent_probe

    valid = {i.source_id for i in kafka + http if i.valid}
    done = await eventually(processed, lambda s: valid <= s, timeout=60)
    assert valid <= done  # nothing valid lost

    kafka_bad = sum(not i.valid for i in kafka)
    http_bad = sum(not i.valid for i in http)
    dead = await eventually(
        lambda: read_events(settings, topics.DEADLETTER, quiet=2.0, timeout=60),
        lambda d: len(d) >= kafka_bad + http_bad,
        timeout=90,
    )
    per_record: Counter = Counter()
    for msg, _ in dead:
        h = dict(msg.headers)
        src = h["garda-source-topic"].decode()
        if src == "http:/api/events":
            assert not h["garda-error"].decode().startswith("internal error")
            continue
        ident = (int(h["garda-source-partition"]), int(h["garda-source-offset"]), src)
        per_record[ident] += 1
        item = placed[ident]
        assert not item.valid, (item.label, h["garda-error"])
        assert _precise(h["garda-error"].decode(), item), (item.label, h["garda-error"])
    assert all(n == 1 for n in per_record.values())  # exactly once
    assert len(per_record) == kafka_bad
    assert len(dead) == kafka_bad + http_bad
    assert worker.proc is not None and worker.proc.poll() is None
    elapsed = time.monotonic() - started
    labels = Counter(i.label for i in kafka + http)
    print(
        f"\nhostile input: kafka {len(kafka)} ({kafka_bad} invalid), http {len(http)}"
        f" ({http_bad} invalid); dead letters {len(dead)}; probe {probe_latency:.2f}s;"
        f" total {elapsed:.1f}s; http statuses {dict(statuses)}; mutations {dict(labels)}"
    )
    assert probe_latency < 15.0
