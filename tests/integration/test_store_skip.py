"""The batch write skips the rows a batch left as they were, and only those.

Two processors take the same records in the same batches, with the same clock, into two
databases: the live one (``load`` keeps the rows it read, ``write_batch`` writes the rows
that differ) and one whose ``load`` keeps nothing, so every touched row is written, as
before rows were compared. Every column of the read model except ``updated_at`` (the write
time) must be equal; a changed row the first one failed to write makes them differ.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

import infra.store as store
from handlers.model import Aggregate
from handlers.policy import load_policy
from infra.db import Database, migrate
from infra.settings import Settings
from infra.simulate import traffic
from streams.processor import BatchProcessor, RawRecord

FIXED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TABLES = {
    "workers": "SELECT * FROM workers ORDER BY worker_id",
    "cases": "SELECT * FROM cases ORDER BY case_id",
    "claims": "SELECT * FROM claims ORDER BY claim_id",
    "employers": "SELECT * FROM employers ORDER BY employer_key",
    "employer_cases": "SELECT * FROM employer_cases ORDER BY case_id",
    "agency_placements": "SELECT * FROM agency_placements ORDER BY worker_id, departed_at",
    "agency_cases": "SELECT * FROM agency_cases ORDER BY case_id",
    "outbox": "SELECT event_id, topic, key, value FROM outbox ORDER BY event_id",
}


class WritesEveryRow(BatchProcessor):
    """The reference: no rows kept from ``load``, so every touched row is written."""

    async def load(self, conn: asyncpg.Connection, worker_ids: list[str]) -> dict[str, Aggregate]:
        return dict(await store.load_aggregates(conn, worker_ids))


@pytest.fixture
async def two_databases(pg_server: Any) -> AsyncIterator[tuple[Database, Database]]:
    names = [f"skip_{i}_{zlib.crc32(str(id(pg_server)).encode())}" for i in range(2)]
    urls = [await pg_server.create_database(n) for n in names]
    dbs = [await Database(u, max_size=2).start() for u in urls]
    try:
        for db in dbs:
            async with db.pool.acquire() as conn:
                await migrate(conn)
        yield dbs[0], dbs[1]
    finally:
        for db in dbs:
            await db.stop()
        for n in names:
            await pg_server.drop_database(n)


def _records(n: int) -> list[RawRecord]:
    out: list[RawRecord] = []
    offsets: dict[tuple[str, int], int] = {}
    for i, (logical, wid, value) in enumerate(itertools.islice(traffic(23), n)):
        partition = zlib.crc32(wid.encode()) % 6
        offset = offsets.get((logical, partition), 0)
        offsets[(logical, partition)] = offset + 1
        out.append(RawRecord(logical, partition, offset, wid.encode(), value, [], 1.7e9 + i))
    return out


async def _read_model(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    async with db.pool.acquire() as conn:
        return {
            table: [tuple((k, v) for k, v in r.items() if k != "updated_at") for r in rows]
            for table, sql in TABLES.items()
            for rows in [await conn.fetch(sql)]
        }


async def test_skipped_rows_are_exactly_the_unchanged_ones(
    two_databases: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    live_db, every_db = two_databases
    written = {"rows": 0, "skipped": 0}
    real = store._write_state

    async def counting(conn: asyncpg.Connection, state: store.BatchState) -> None:
        if state.loaded is not None:  # the live processor's
            kept = len(state.workers) + len(state.cases) + len(state.claims)
            written["rows"] += kept
            written["skipped"] += sum(len(rows) for rows in state.rows) - kept
        await real(conn, state)

    monkeypatch.setattr(store, "_write_state", counting)
    policy = load_policy()
    live = BatchProcessor(live_db, Settings(database_url=live_db.url), policy, clock=lambda: FIXED)
    every = WritesEveryRow(
        every_db, Settings(database_url=every_db.url), policy, clock=lambda: FIXED
    )
    records = _records(1200)
    for i in range(0, len(records), 40):  # small batches: workers met again and again
        batch = records[i : i + 40]
        await live.process(batch)
        await every.process(batch)
        if i % 400 == 0:
            assert await _read_model(live_db) == await _read_model(every_db)
    assert live.totals == every.totals
    model = await _read_model(live_db)
    assert all(model[t] for t in ("workers", "cases", "claims", "employers", "agency_cases"))
    assert model == await _read_model(every_db)
    # the comparison above is about skipped rows: there were many of both kinds
    assert written["skipped"] > 200 and written["rows"] > 1000
