"""Failed API requests are rate-limited per client, and refusals are audited in aggregate."""

from __future__ import annotations

import types
from pathlib import Path

import aiohttp
import asyncpg

from infra.db import Database, migrate
from infra.settings import Settings
from streams.web.ratelimit import FailureLimiter
from tests.integration.harness import WorkerProcess, bearer, new_token

LIMIT = 5
EVENT = {"specversion": "1.0", "id": "x", "source": "s", "type": "pmi.incident.reported"}


async def _count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_unauthenticated_flood_gets_429_and_stops_writing_audit_rows(
    settings: Settings, tmp_path: Path
) -> None:
    w = WorkerProcess(settings, tmp_path, GARDA_FAILED_REQUESTS_PER_MINUTE=str(LIMIT))
    await w.start()
    url = settings.database_url or ""
    try:
        _, hq = await new_token(settings, hq=True)
        statuses: list[int] = []
        retry_after: set[int] = set()
        async with aiohttp.ClientSession() as http:
            for _ in range(10):  # successes cost nothing
                async with http.get(f"{w.url}/api/posts", headers=bearer(hq)) as r:
                    assert r.status == 200
            for i in range(200):
                headers = {} if i % 2 else bearer("garda_wrong")
                async with http.post(f"{w.url}/api/events", json=EVENT, headers=headers) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        retry_after.add(int(r.headers["Retry-After"]))
                        assert "too many failed requests" in (await r.json())["error"]
            # the client is refused everything now, even with a valid token, before any work
            async with http.get(f"{w.url}/api/posts", headers=bearer(hq)) as r:
                assert r.status == 429
            async with http.get(f"{w.url}/health") as r:  # not an API call: never limited
                assert r.status in (200, 503)
            async with http.get(f"{w.url}/metrics") as r:
                text = await r.text()
        assert statuses[:LIMIT] == [401] * LIMIT
        assert statuses[LIMIT:] == [429] * (200 - LIMIT)
        assert retry_after and all(1 <= s <= 60 for s in retry_after), retry_after
        assert f"garda_http_rate_limited_total {200 - LIMIT + 1:.1f}" in text
        # One audit row per failed request within the limit, one aggregate row for the rest.
        assert await _count(url, "SELECT count(*) FROM audit_log WHERE status = 401") == LIMIT
        assert await _count(url, "SELECT count(*) FROM audit_log WHERE status = 429") == 1
    finally:
        await w.stop()


async def test_desk_sign_in_guessing_is_limited_too(settings: Settings, tmp_path: Path) -> None:
    w = WorkerProcess(settings, tmp_path, GARDA_FAILED_REQUESTS_PER_MINUTE=str(LIMIT))
    await w.start()
    try:
        statuses = []
        async with aiohttp.ClientSession() as http:
            for i in range(LIMIT + 20):
                form = {"token": f"garda_guess{i}", "actor": "officer-1", "next": "/desk"}
                async with http.post(f"{w.url}/desk/session", data=form) as r:
                    statuses.append(r.status)
        assert statuses == [401] * LIMIT + [429] * 20
        url = settings.database_url or ""
        assert await _count(url, "SELECT count(*) FROM audit_log WHERE status = 401") == LIMIT
        assert await _count(url, "SELECT count(*) FROM audit_log WHERE status = 429") == 1
    finally:
        await w.stop()


async def test_refusals_are_audited_once_a_minute_per_client_with_their_count(
    database_url: str,
) -> None:
    async with Database(database_url, max_size=2) as db:
        async with db.pool.acquire() as conn:
            await migrate(conn)
        runtime = types.SimpleNamespace(db=db)
        limiter = FailureLimiter(2)
        for _ in range(2):
            await limiter.failed("10.0.0.1")
        assert await limiter.retry_after("10.0.0.1") is not None
        assert await limiter.retry_after("10.0.0.2") is None  # another client is unaffected
        for i in range(100):
            await limiter.refused(runtime, "10.0.0.1", "/api/events" if i % 4 else "/api/posts")
        async with db.pool.acquire() as conn:
            rows = await conn.fetch("SELECT status, path, detail FROM audit_log ORDER BY seq")
            assert [(r["status"], r["detail"]["refused"]) for r in rows] == [(429, 1)]
            await limiter.flush(runtime)  # the worker's timer
            rows = await conn.fetch("SELECT detail FROM audit_log ORDER BY seq")
            assert [r["detail"]["refused"] for r in rows] == [1, 99]
            assert rows[1]["detail"]["paths"] == {"/api/events": 75, "/api/posts": 24}
            assert rows[1]["detail"]["client"] == "10.0.0.1"
            await limiter.flush(runtime)  # nothing new: no row
            assert await conn.fetchval("SELECT count(*) FROM audit_log") == 2


async def test_limit_zero_turns_it_off() -> None:
    limiter = FailureLimiter(0)
    for _ in range(1000):
        await limiter.failed("10.0.0.1")
    assert await limiter.retry_after("10.0.0.1") is None
