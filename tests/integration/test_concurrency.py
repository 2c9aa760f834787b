"""BatchProcessor against a real PostgreSQL: two processors on one worker, transient errors."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

import streams.processor as processor_mod
from handlers.policy import load_policy
from infra import store
from infra.db import Database
from infra.settings import Settings
from streams.processor import BatchProcessor, RawRecord

TOPIC = "pmi.incidents.v1"


def incident(ev_id: str, inc: str, category: str, worker: str = "PMI-1") -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": ev_id,
            "source": "kjri/desk",
            "type": "pmi.incident.reported",
            "subject": worker,
            "time": "2026-01-01T00:00:00Z",
            "data": {
                "incident_id": inc,
                "worker_id": worker,
                "category": category,
                "occurred_at": "2026-01-01T00:00:00Z",
                "country": "MY",
                "reporter_type": "mission",
            },
        }
    ).encode()


def processor(db: Database) -> BatchProcessor:
    return BatchProcessor(db, Settings(database_url=db.url), load_policy())


async def _state(db: Database) -> tuple:
    async with db.pool.acquire() as conn:
        cases = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT case_id, kind, status, reports FROM cases ORDER BY case_id"
            )
        ]
        timeline = await conn.fetchval("SELECT count(*) FROM case_timeline")
        outbox = await conn.fetchval("SELECT count(*) FROM outbox")
        await conn.execute(
            "TRUNCATE workers, cases, claims, case_timeline, processed_events, deadletters, outbox"
        )
    return cases, timeline, outbox


async def test_two_processors_on_one_workers_events_serialise(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's two reports arrive on two partitions (a producer with another partitioner)
    and are processed at the same moment by two processors: the second must see the first
    (one case, two reports), exactly as when they run one after the other."""
    r0 = RawRecord(TOPIC, 0, 0, b"PMI-1", incident("e1", "I1", "unpaid_wages"), timestamp=1.0)
    r1 = RawRecord(TOPIC, 1, 0, b"PMI-1", incident("e2", "I2", "unpaid_wages"), timestamp=2.0)
    await processor(db).process([r0])
    await processor(db).process([r1])
    sequential = await _state(db)
    assert [c[3] for c in sequential[0] if c[1] == "protection"] == [2]

    real_load = store.load_aggregates
    gate = asyncio.Barrier(2)

    async def load_then_meet(conn: asyncpg.Connection, ids):
        aggs = await real_load(conn, ids)
        try:  # without serialisation both get here with a stale aggregate
            await asyncio.wait_for(gate.wait(), 1.0)
        except TimeoutError:
            pass
        return aggs

    monkeypatch.setattr(processor_mod, "load_aggregates", load_then_meet)
    await asyncio.gather(processor(db).process([r0]), processor(db).process([r1]))
    assert await _state(db) == sequential


async def test_a_one_off_query_cancel_does_not_dead_letter_a_valid_event(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = processor_mod.write_batch
    calls = {"n": 0}

    async def cancelled_once(conn, batch, clocks):
        calls["n"] += 1
        if calls["n"] == 1:
            raise asyncpg.QueryCanceledError("canceling statement due to statement timeout")
        return await real_write(conn, batch, clocks)

    monkeypatch.setattr(processor_mod, "write_batch", cancelled_once)
    report = await processor(db).process(
        [RawRecord(TOPIC, 0, 0, b"PMI-1", incident("e1", "I1", "death"), timestamp=1.0)]
    )
    assert report.outcomes["opened"] == 1 and not report.outcomes["deadletter"]
    async with db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM deadletters") == 0
        assert await conn.fetchval("SELECT count(*) FROM cases WHERE kind = 'protection'") == 1


async def test_a_record_that_keeps_failing_is_dead_lettered_after_a_few_tries(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processor_mod, "SINGLE_RECORD_ATTEMPTS", 2)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a handler's caller")

    monkeypatch.setattr(processor_mod, "in_time_order", broken)
    rec = RawRecord(TOPIC, 0, 7, b"PMI-1", incident("e1", "I1", "death"), timestamp=1.0)
    report = await processor(db).process([rec])
    assert report.outcomes["deadletter"] == 1
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow('SELECT "offset", error FROM deadletters')
    assert row["offset"] == 7 and "internal error" in row["error"]
