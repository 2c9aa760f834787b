"""Integration fixtures: a real ``garda worker`` process on the test broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from infra.db import Database, migrate
from infra.settings import Settings
from infra.tokens import create_token
from tests.integration.harness import WorkerProcess


@pytest.fixture
def settings(stack_settings: Settings) -> Settings:
    return stack_settings.replace(timer_interval=0.5)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A started pool on a fresh database with every migration applied."""
    database = await Database(database_url).start()
    async with database.pool.acquire() as conn:
        await migrate(conn)
    try:
        yield database
    finally:
        await database.stop()


@pytest.fixture
async def worker(settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    w = WorkerProcess(settings, tmp_path, "w1")
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def make_token(
    settings: Settings, *, posts: list[str] | None = None, hq: bool = False
) -> str:
    conn = await asyncpg.connect(settings.database_url)
    try:
        _, token = await create_token(conn, posts=posts or [], hq=hq, label="test")
    finally:
        await conn.close()
    return token


@pytest.fixture
async def hq_headers(settings: Settings, worker: WorkerProcess) -> dict[str, str]:
    token = await make_token(settings, hq=True)
    return {"Authorization": f"Bearer {token}"}
