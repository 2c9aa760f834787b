"""The outbox against the real broker and PostgreSQL: one unpublishable row never blocks the
others; dead letters are capped and masked on the topic, kept whole in PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from handlers.policy import load_policy
from infra.db import Database, migrate
from infra.outbox import OutboxRelay
from infra.settings import Settings
from infra.store import (
    DEADLETTER_VALUE_CAP,
    MAX_RECORD_BYTES,
    BatchWrite,
    OutboxRow,
    OutputTooLarge,
    write_batch,
)
from schemas import topics
from streams.processor import BatchProcessor, RawRecord
from tests.integration.harness import read_events
from tests.integration.test_poison_records import departure

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(stack_settings: Settings) -> AsyncIterator[tuple[BatchProcessor, OutboxRelay]]:
    db = Database(stack_settings.database_url, max_size=4)
    await db.start()
    async with db.pool.acquire() as conn:
        await migrate(conn)
    relay = OutboxRelay(db, stack_settings.kafka_bootstrap, sweep_age=0.0)
    await relay.start()
    try:
        yield BatchProcessor(db, stack_settings, load_policy()), relay
    finally:
        await relay.stop()
        await db.stop()


async def _insert(conn: asyncpg.Connection, event_id: str, topic: str, value: bytes) -> int:
    return await conn.fetchval(
        "INSERT INTO outbox (event_id, topic, key, value) VALUES ($1, $2, $3, $4) RETURNING seq",
        event_id,
        topic,
        b"W-1",
        value,
    )


async def test_an_unpublishable_row_is_parked_and_never_blocks_the_others(
    runtime: tuple[BatchProcessor, OutboxRelay], stack_settings: Settings
) -> None:
    proc, relay = runtime
    topic = stack_settings.topic(topics.ALERTS)
    async with proc.db.pool.acquire() as conn:
        # written behind write_batch's back: the relay is the last line of defence
        seqs = [
            await _insert(conn, "a", topic, b'{"n": 1}'),
            await _insert(conn, "big", topic, b"x" * (2 << 20)),
            await _insert(conn, "b", topic, b'{"n": 2}'),
        ]
    assert await relay.publish(seqs) == 2
    assert relay.parked == 1
    async with proc.db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_id, published_at IS NOT NULL AS published, parked_at IS NOT NULL"
            " AS parked, park_reason FROM outbox ORDER BY seq"
        )
        later = await _insert(conn, "c", topic, b'{"n": 3}')
    assert [(r["event_id"], r["published"], r["parked"]) for r in rows] == [
        ("a", True, False),
        ("big", False, True),
        ("b", True, False),
    ]
    assert rows[1]["park_reason"].startswith("MessageSizeTooLargeError")
    # later rows go out; the parked one is never sent again, by publish or by the sweep
    assert await relay.publish([later]) == 1
    assert await relay.sweep() == 0
    values = [m.value for m, _ in await read_events(stack_settings, topics.ALERTS)]
    assert values == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']


async def test_write_batch_refuses_an_output_event_that_could_never_be_published(
    runtime: tuple[BatchProcessor, OutboxRelay],
) -> None:
    proc, _ = runtime
    row = OutboxRow("huge", "t", b"k", b"x" * (MAX_RECORD_BYTES + 1))
    async with proc.db.pool.acquire() as conn:
        with pytest.raises(OutputTooLarge, match="would be"):
            async with conn.transaction():
                await write_batch(conn, BatchWrite(outbox=[row]), proc.policy)
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


async def test_an_oversized_invalid_input_is_a_capped_dead_letter_and_nothing_stalls(
    runtime: tuple[BatchProcessor, OutboxRelay], stack_settings: Settings
) -> None:
    proc, relay = runtime
    big = departure("W-BIG", description="d" * 1_200_000)  # not a departure field, and huge
    raw = json.dumps(big).encode()
    good = departure("W-GOOD")
    records = [
        RawRecord(stack_settings.topic(topics.DEPARTURES), 0, 0, b"W-BIG", raw, []),
        RawRecord(
            stack_settings.topic(topics.DEPARTURES), 0, 1, b"W-GOOD", json.dumps(good).encode()
        ),
    ]
    report = await proc.process(records)
    await relay.publish(report.outbox_seqs)
    async with proc.db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
        dl = await conn.fetchrow("SELECT seq, value, error FROM deadletters")
    assert bytes(dl["value"]) == raw  # the original bytes, whole, in PostgreSQL
    assert dl["error"].startswith("data.description: unknown field")
    [(msg, _)] = await read_events(stack_settings, topics.DEADLETTER)
    headers = {k: v for k, v in msg.headers}
    assert len(msg.value) == DEADLETTER_VALUE_CAP
    assert headers["garda-truncated"] == b"true"
    assert headers["garda-original-size"] == str(len(raw)).encode()
    assert headers["garda-deadletter-id"] == str(dl["seq"]).encode()
    assert headers["garda-source-offset"] == b"0"
    # the valid event behind it was processed and its outputs published
    cases = await read_events(stack_settings, topics.CASES)
    assert any(v and v["subject"] == "W-GOOD" for _, v in cases)


async def test_rejected_departures_are_masked_on_the_topic_and_whole_in_postgres(
    runtime: tuple[BatchProcessor, OutboxRelay], stack_settings: Settings
) -> None:
    proc, relay = runtime
    ev = departure(
        "W-PII",
        destination_country="Qatar",  # invalid: dead-lettered
        nik="3201010101010001",
        passport_no="C1234567",
        full_name="Siti Aminah",
    )
    raw = json.dumps(ev).encode()
    truncated = raw[: raw.index(b'"full_name"') + 30]  # invalid JSON still holding PII
    report = await proc.process(
        [
            RawRecord(stack_settings.topic(topics.DEPARTURES), 0, 0, b"W-PII", raw, []),
            RawRecord(stack_settings.topic(topics.DEPARTURES), 0, 1, b"W-PII", truncated, []),
        ]
    )
    await relay.publish(report.outbox_seqs)
    msgs = await read_events(stack_settings, topics.DEADLETTER)
    assert len(msgs) == 2
    for msg, _ in msgs:
        for secret in (b"3201010101010001", b"C1234567", b"Siti Aminah"):
            assert secret not in msg.value
            assert all(secret not in v for _, v in msg.headers)
    first = json.loads(msgs[0][0].value)
    assert first["data"]["nik"] == "32************01"
    assert first["data"]["destination_country"] == "Qatar"  # the rest is as sent
    assert dict(msgs[0][0].headers)["garda-masked"] == b"full_name,nik,passport_no"
    assert b'"passport_no": "C1****67"' in msgs[1][0].value
    async with proc.db.pool.acquire() as conn:
        kept = [
            bytes(r["value"])
            for r in await conn.fetch('SELECT value FROM deadletters ORDER BY "offset"')
        ]
        outbox = b"".join(bytes(r["value"]) for r in await conn.fetch("SELECT value FROM outbox"))
    assert kept == [raw, truncated]
    assert b"3201010101010001" not in outbox


def test_masking_survives_json_nested_deeper_than_python_recurses() -> None:
    """Found by the hostile-input test: the C JSON parser accepts nesting that the masking
    walk cannot recurse through; the dead letter must still be written (masked textually)."""
    from infra.store import mask_record_value

    deep = b'{"nik": "3201010101010001", "d": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    value, keys = mask_record_value(deep)
    assert keys == {"nik"} and b"3201010101010001" not in value
