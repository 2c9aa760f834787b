"""The batch store against a real PostgreSQL: dead letters are deduplicated by record bytes."""

from __future__ import annotations

import asyncpg

from infra.db import _init_connection, migrate
from infra.store import DeadLetter, write_dead_letters


def dead(value: bytes) -> DeadLetter:
    return DeadLetter(
        topic="pmi.departures.v1",
        partition=0,
        offset=0,
        error="invalid JSON",
        key=b"W1",
        value=value,
        headers=[],
    )


async def test_redelivered_dead_letter_once_new_bytes_at_a_reused_offset_again(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    await _init_connection(conn)
    try:
        await migrate(conn)
        seqs = []
        for value in (b"{bad", b"{bad", b"{other"):  # redelivery, then a new broker's offset 0
            async with conn.transaction():
                seqs.append(await write_dead_letters(conn, [dead(value)], "pmi.deadletter.v1"))
        assert [len(s) for s in seqs] == [1, 0, 1]
        rows = await conn.fetch("SELECT value FROM outbox ORDER BY seq")
        assert [bytes(r["value"]) for r in rows] == [b"{bad", b"{other"]
        assert await conn.fetchval("SELECT count(*) FROM deadletters") == 2
    finally:
        await conn.close()
