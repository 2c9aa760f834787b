"""Poison records against the real batch pipeline and PostgreSQL (no broker needed).

Each test reproduces a poison record: the record must end as a dead letter with a
precise reason, at once (no retries meant for outages), and the valid record behind it must
go through.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from structlog.testing import capture_logs

from errors import CaseConflict
from handlers.cases import case_id_for
from handlers.model import Aggregate, Case, Worker, stable_id
from handlers.policy import load_policy
from infra.db import Database, _init_connection, migrate
from infra.settings import Settings
from infra.store import CASE_UPSERT, BatchWrite, write_batch
from streams.processor import BatchProcessor, RawRecord
from tests.integration.harness import cloudevent

DEPARTURES = "pmi.departures.v1"
T = "2026-11-29T02:31:29Z"


def departure(worker: str, country: str = "QA", **data: object) -> dict:
    return cloudevent(
        "pmi.departure.recorded",
        {
            "worker_id": worker,
            "destination_country": country,
            "departed_at": T,
            "scheme": "p2p",
            "employer_type": "household",
            "visa_type": "visit",
            **data,
        },
        time_=T,
        id=f"dep-{worker}",
        source="siskop2mi/embarkation-cgk",
    )


def record(ev: dict | bytes, offset: int, *, key: bytes | None = None, **kw: object) -> RawRecord:
    value = ev if isinstance(ev, bytes) else json.dumps(ev).encode()
    if key is None and isinstance(ev, dict):
        key = ev["subject"].encode()
    return RawRecord(DEPARTURES, 0, offset, key, value, [], **kw)


@pytest.fixture
async def processor(database_url: str) -> AsyncIterator[BatchProcessor]:
    db = Database(database_url, max_size=4)
    await db.start()
    async with db.pool.acquire() as conn:
        await migrate(conn)
    try:
        yield BatchProcessor(db, Settings(database_url=database_url), load_policy())
    finally:
        await db.stop()


def _retried(logs: list[dict]) -> list[dict]:
    """The retries a record waited on (the ones meant for outages)."""
    return [e for e in logs if "will retry" in e["event"]]


async def _deadletters(proc: BatchProcessor) -> list[asyncpg.Record]:
    async with proc.db.pool.acquire() as conn:
        return await conn.fetch('SELECT "offset", error FROM deadletters ORDER BY "offset"')


async def test_record_timestamp_out_of_range_is_refused_precisely(
    processor: BatchProcessor,
) -> None:
    ev = departure("W-TS-1")
    del ev["time"]  # the record timestamp stands in for the missing time
    year_33658 = 1_000_000_000_000.0  # seconds
    good = departure("W-TS-2")
    with capture_logs() as logs:
        report = await processor.process(
            [record(ev, 0, timestamp=year_33658), record(good, 1, timestamp=1.7e9)]
        )
    assert not _retried(logs)  # not retried as if it were an outage
    assert report.outcomes["invalid"] == 1
    [dl] = await _deadletters(processor)
    assert dl["offset"] == 0
    assert dl["error"].startswith("timestamp: the record timestamp")
    assert "out of range" in dl["error"]
    async with processor.db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM workers WHERE worker_id='W-TS-2'") == 1


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"time": "0001-01-01T00:00:00+23:59"}, "time: year 1 is out of range"),
        ({"time": "9999-12-31T23:59:59-23:59"}, "time: year 9999 is out of range"),
        ({"id": "dep-\udfff"}, "id: holds a lone UTF-16 surrogate"),
        ({"source": "a\x1fb"}, "source: must not contain control characters"),
    ],
)
async def test_cheap_poison_is_invalid_at_once(
    processor: BatchProcessor, patch: dict, needle: str
) -> None:
    ev = {**departure("W-P-1"), **patch}
    with capture_logs() as logs:
        report = await processor.process([record(ev, 0), record(departure("W-P-2"), 1)])
    assert not _retried(logs)
    assert report.outcomes["invalid"] == 1 and report.outcomes["departed"] == 1
    [dl] = await _deadletters(processor)
    assert dl["error"].startswith(needle)


def test_case_ids_are_derived_injectively() -> None:
    assert case_id_for("W\x1fprotection", "x", "c") != case_id_for("W", "protection\x1fx", "c")
    assert stable_id("a\x1eb", "c") != stable_id("a", "\x1eb\x1fc")
    # ids without the separator hash as before (existing case ids stay valid)
    assert stable_id("W-1", "protection", "c") == stable_id("W-1", "protection", "c")


async def _insert_case(conn: asyncpg.Connection, case_id: str, worker: str, post: str) -> None:
    await conn.execute(
        """INSERT INTO cases (case_id, worker_id, kind, category, severity, status, post_id,
               escalation_level, ack_due, resolve_due, opened_at, reports, next_due, partition,
               doc, updated_at)
           VALUES ($1, $2, 'protection', 'other', 'low', 'open', $3, 0, now(), now(), now(),
                   1, NULL, 0, '{"case_id": "x"}'::jsonb, now())""",
        case_id,
        worker,
        post,
    )


async def test_a_case_write_never_moves_a_case_to_another_worker(
    processor: BatchProcessor,
) -> None:
    """Two causes that derive one case id (a collision): the second worker's record is
    dead-lettered at once with the reason, the first worker's case is untouched."""
    ev = departure("W-B")
    # the id W-B's non-procedural departure derives, already owned by W-A at another post
    cause = f"departure:QA:{T}"  # handlers.nonprocedural: the journey is the cause
    case_id = case_id_for("W-B", "non_procedural_departure", cause)
    async with processor.db.pool.acquire() as conn:
        await _insert_case(conn, case_id, "W-A", "KJRI-JOHOR-BAHRU")
    with capture_logs() as logs:
        report = await processor.process([record(ev, 0), record(departure("W-C", "MY"), 1)])
    assert not _retried(logs)  # deterministic: no outage retries
    assert report.outcomes["deadletter"] == 1
    [dl] = await _deadletters(processor)
    assert dl["error"] == f"rejected: case {case_id} already exists for another worker; not moved"
    async with processor.db.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT worker_id, post_id FROM cases WHERE case_id=$1", case_id)
        assert tuple(row) == ("W-A", "KJRI-JOHOR-BAHRU")
        assert await conn.fetchval("SELECT count(*) FROM workers WHERE worker_id='W-C'") == 1


async def test_the_upsert_itself_refuses_to_move_a_case(database_url: str) -> None:
    """The SQL guard, below the check: an upsert of a case id owned by another worker or
    post changes nothing."""
    conn = await asyncpg.connect(database_url)
    await _init_connection(conn)
    try:
        await migrate(conn)
        await _insert_case(conn, "CASE-G", "W-A", "P-1")
        now = datetime.now(UTC)
        for worker, post in (("W-B", "P-1"), ("W-A", "P-2")):
            row = (
                "CASE-G",
                worker,
                "protection",
                "other",
                "high",
                "open",
                post,
                1,
                now,
                now,
                now,
                2,
                None,
                0,
                '{"moved": true}',
            )
            # The batch statement, with a batch of one row.
            status = await conn.execute(CASE_UPSERT, *([v] for v in row))
            assert status == "INSERT 0 0"
        case = Case(
            case_id="CASE-G",
            worker_id="W-B",
            kind="protection",
            category="other",
            severity="low",
            post_id="P-1",
            opened_at=now,
        )
        agg = Aggregate(worker=Worker(worker_id="W-B"), cases={"CASE-G": case})
        with pytest.raises(CaseConflict, match="another worker"):
            async with conn.transaction():
                await write_batch(conn, BatchWrite(aggregates=[(agg, 0)]), load_policy())
        row = await conn.fetchrow("SELECT worker_id, post_id FROM cases WHERE case_id='CASE-G'")
        assert tuple(row) == ("W-A", "P-1")
        assert await conn.fetchval("SELECT severity FROM cases WHERE case_id='CASE-G'") == "low"
    finally:
        await conn.close()
