"""Faults: the database goes away under load; nothing is lost, nothing is dead-lettered."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from infra.settings import Settings
from schemas import topics
from tests.integration.events import departure
from tests.integration.harness import (
    WorkerProcess,
    bearer,
    db_fetch,
    eventually,
    get_json,
    new_token,
    publish_events,
)


async def _count(url: str, sql: str) -> int:
    return (await db_fetch(url, sql))[0][0]


async def _set_connections(server_url: str, db: str, allow: bool) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                db,
            )
    finally:
        await conn.close()


async def test_database_outage_holds_events_until_it_returns(
    settings: Settings, worker: WorkerProcess, pg_server
) -> None:
    url = settings.database_url
    db = url.rsplit("/", 1)[1]
    await publish_events(
        settings, topics.DEPARTURES, [departure(f"W-F-{i}", "TW") for i in range(20)]
    )
    await eventually(
        lambda: _count(url, "SELECT count(*) FROM processed_events"), lambda n: n == 20
    )

    _, hq = await new_token(settings, hq=True)
    await _set_connections(pg_server.url, db, allow=False)
    try:
        await publish_events(
            settings, topics.DEPARTURES, [departure(f"W-F-{i}", "HK") for i in range(20, 50)]
        )
        await asyncio.sleep(3)
        status, health = await get_json(f"{worker.url}/health")
        assert status == 503 and health["database"] != "ok"
        assert health["failing"] == ["database"]
        async with aiohttp.ClientSession() as http, http.get(f"{worker.url}/metrics") as r:
            text = await r.text()
        # The per-process series are still served; the database gauges say it is down.
        assert r.status == 200 and "garda_db_up 0.0" in text and "garda_events_total" in text
        assert "garda_db_cases_open" not in text
        status, body = await get_json(f"{worker.url}/api/cases", headers=bearer(hq))
        assert status == 503 and "unavailable" in body["error"]  # not a 500
    finally:
        await _set_connections(pg_server.url, db, allow=True)

    await eventually(
        lambda: _count(url, "SELECT count(*) FROM processed_events"), lambda n: n == 50, timeout=40
    )
    assert await _count(url, "SELECT count(*) FROM deadletters") == 0
    assert await _count(url, "SELECT count(*) FROM workers WHERE country = 'HK'") == 30
    # The outbox drains once the database is back.
    await eventually(
        lambda: _count(url, "SELECT count(*) FROM outbox WHERE published_at IS NULL"),
        lambda n: n == 0,
        timeout=30,
    )
    assert worker.proc is not None and worker.proc.poll() is None
