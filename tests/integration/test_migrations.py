"""Migrations apply on start, in order, idempotently, and concurrently without harm."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infra.db import migrate, migration_files


async def test_migrations_apply_once_and_are_idempotent(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await migrate(conn)
        assert applied == [v for v, _ in migration_files()]
        assert await migrate(conn) == []  # second run: nothing to do
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {
            "workers",
            "cases",
            "claims",
            "case_timeline",
            "processed_events",
            "outbox",
            "deadletters",
            "api_tokens",
            "audit_log",
            "schema_migrations",
        } <= tables
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_version_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        flat = [v for r in results for v in r]
        assert sorted(flat) == sorted(v for v, _ in migration_files())
    finally:
        for c in conns:
            await c.close()


async def test_case_timeline_is_append_only(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO case_timeline (entry_id, case_id, at, type) VALUES ('e1', 'c1', now(), 'x')"
        )
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE case_timeline SET type = 'y'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM case_timeline")
    finally:
        await conn.close()
