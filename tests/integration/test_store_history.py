"""The timeline rows and processed ids sent as one JSON parameter are stored exactly as the
array parameters store them (every column), awkward values included; what JSON cannot carry
exactly takes the arrays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

import infra.store as store
from handlers.model import TimelineEntry
from infra.db import Database
from infra.store import BatchWrite, ProcessedId

T = datetime(2026, 12, 1, 22, 23, 13, 123456, tzinfo=UTC)


def _batch() -> BatchWrite:
    details: list[dict[str, Any]] = [
        {},
        {"note": 'é \u2028 😀 "quoted" \\\\ back', "n": 1.5, "big": 2**62, "none": None},
        {"nested": {"list": [1, "x", {"t": "2026-12-01T10:00:00+07:00"}]}, "ok": True},
        {"huge": 10**30},  # orjson refuses it: this batch takes the arrays
    ]
    times = [T, T.astimezone(timezone(timedelta(hours=7))), T.replace(microsecond=0), T]
    timeline = [
        (
            TimelineEntry(f"TL-{i}", "CASE-1", at, "garda.case.opened", None if i else "o-1", d),
            "src/ü",
            f"ev-{i}",
        )
        for i, (at, d) in enumerate(zip(times, details, strict=True))
    ]
    processed = [
        ProcessedId("src/ü", f"ev-{i}", "pmi.x", "PMI-ü", "pmi.incidents.v1", 5, 2**40 + i, "ok",
                    None if i else "d" * 32)
        for i in range(3)
    ]  # fmt: skip
    return BatchWrite(timeline=timeline, processed=processed)


async def _stored(conn: asyncpg.Connection) -> tuple[list[Any], list[Any]]:
    timeline = await conn.fetch(
        "SELECT entry_id, case_id, at, type, actor, detail, source, event_id"
        " FROM case_timeline ORDER BY entry_id"
    )
    processed = await conn.fetch(
        'SELECT source, id, type, worker_id, topic, partition, "offset", outcome, digest'
        " FROM processed_events ORDER BY id"
    )
    return [tuple(r) for r in timeline], [tuple(r) for r in processed]


async def test_json_rows_are_stored_as_the_arrays_store_them(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[bool] = []
    real = store._rows_json

    def spy(rows: list[dict[str, Any]], *, naive: bool = False) -> str | None:
        text = real(rows, naive=naive)
        sent.append(text is not None)
        return text

    async with db.pool.acquire() as conn:
        results = []
        for rows_json in (spy, lambda rows, naive=False: None):
            monkeypatch.setattr(store, "_rows_json", rows_json)
            batch = _batch()
            async with conn.transaction():
                await store._write_history(conn, BatchWrite(timeline=batch.timeline[:3]))
                await store._write_history(conn, BatchWrite(timeline=batch.timeline[3:]))
                await store._write_history(conn, BatchWrite(processed=batch.processed))
            results.append(await _stored(conn))
            await conn.execute("TRUNCATE case_timeline, processed_events")
    assert sent == [True, False, True]  # the batch with 10**30 took the arrays
    assert results[0] == results[1]
    assert len(results[0][0]) == 4 and len(results[0][1]) == 3


async def test_text_with_a_nul_takes_the_arrays_and_fails_as_before(db: Database) -> None:
    entry = TimelineEntry("TL-N", "CASE-1", T, "pmi.case.note-added", "o\x00", {})
    async with db.pool.acquire() as conn:
        assert store._rows_json([{"r": "o\x00"}]) is None
        with pytest.raises(asyncpg.CharacterNotInRepertoireError):
            await store._write_history(conn, BatchWrite(timeline=[(entry, "s", "e")]))
