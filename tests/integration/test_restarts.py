"""Nothing lost, nothing twice: a worker stopped (SIGTERM) or killed (SIGKILL) in the middle of
a backlog and a new one taking over, or a second worker joining mid-backlog (a rebalance),
leave every event applied exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from infra.settings import Settings
from schemas import topics
from tests.integration.events import departure, incident
from tests.integration.harness import (
    WorkerProcess,
    db_fetch,
    eventually,
    get_json,
    publish_events,
)

N = 3000


async def _count(url: str, sql: str) -> int:
    return (await db_fetch(url, sql))[0][0]


async def _assigned(*workers: WorkerProcess) -> bool:
    """Every one of ``workers`` holds partitions (its /health)."""
    for w in workers:
        _, health = await get_json(f"{w.url}/health")
        if not health.get("assigned"):
            return False
    return True


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_stop_mid_backlog_then_restart_loses_nothing(
    settings: Settings, tmp_path: Path, how: str
) -> None:
    url = settings.database_url
    w1 = await WorkerProcess(settings, tmp_path, "w1").start()
    w2 = WorkerProcess(settings, tmp_path, "w2")
    try:
        wids = [f"W-R-{i:05d}" for i in range(N)]
        await publish_events(settings, topics.DEPARTURES, [departure(w, "TW") for w in wids])
        await publish_events(
            settings,
            topics.INCIDENTS,
            [incident(w, country="TW", region=None) for w in wids[: N // 3]],
        )
        total = N + N // 3
        # Stop the worker once it is part-way through.
        await eventually(
            lambda: _count(url, "SELECT count(*) FROM processed_events"),
            lambda n: n >= 400,
            timeout=30,
            interval=0.02,
        )
        if how == "sigkill":
            w1.kill9()
        else:
            await w1.stop()
        done_before = await _count(url, "SELECT count(*) FROM processed_events")
        await w2.start(ready_timeout=60)
        await eventually(
            lambda: _count(url, "SELECT count(*) FROM processed_events"),
            lambda n: n == total,
            timeout=90,
        )
        await asyncio.sleep(1.5)  # anything replayed after this would show up as duplicates
        assert await _count(url, "SELECT count(*) FROM processed_events") == total
        assert await _count(url, "SELECT count(*) FROM workers") == N
        assert await _count(url, "SELECT count(*) FROM cases WHERE kind = 'protection'") == N // 3
        assert (
            await _count(
                url, "SELECT coalesce(sum(reports), 0) FROM cases WHERE kind = 'protection'"
            )
            == N // 3
        )
        assert await _count(url, "SELECT count(*) FROM deadletters") == 0
        await eventually(
            lambda: _count(url, "SELECT count(*) FROM outbox WHERE published_at IS NULL"),
            lambda n: n == 0,
            timeout=30,
        )
        print(f"\n{how}: {done_before}/{total} done before the stop")
    finally:
        w1.kill9()
        await w2.stop()


async def test_a_worker_joining_under_load_changes_nothing_twice(
    settings: Settings, tmp_path: Path
) -> None:
    """Events keep arriving while a second worker joins: partitions move between the two in
    the middle of the traffic (a rebalance) and every event is still applied exactly once."""
    url = settings.database_url
    w1 = await WorkerProcess(settings, tmp_path, "w1").start()
    w2 = WorkerProcess(settings, tmp_path, "w2")
    wids = [f"W-J-{i:05d}" for i in range(N)]

    joined = asyncio.Event()

    async def traffic() -> None:
        for i in range(0, N, 100):  # ~10 s of steady traffic
            if i == 2 * N // 3:
                # The last third once w2 holds partitions: on a loaded machine its start
                # outlasted the whole traffic, and it joined after it (handled nothing).
                await asyncio.wait_for(joined.wait(), 120)
                await eventually(lambda: _assigned(w1, w2), lambda ok: ok, timeout=60)
            await publish_events(
                settings, topics.DEPARTURES, [departure(w, "HK") for w in wids[i : i + 100]]
            )
            await asyncio.sleep(0.3)

    try:
        sender = asyncio.create_task(traffic())
        await asyncio.sleep(1.0)
        await w2.start(ready_timeout=60)
        joined.set()
        await sender
        await eventually(
            lambda: _count(url, "SELECT count(*) FROM processed_events"),
            lambda n: n == N,
            timeout=90,
        )
        await asyncio.sleep(1.5)
        assert await _count(url, "SELECT count(*) FROM processed_events") == N
        assert await _count(url, "SELECT count(*) FROM workers") == N
        assert await _count(url, "SELECT count(*) FROM deadletters") == 0
        both = [w.log_text().count('"event handled"') for w in (w1, w2)]
        assert all(n > 0 for n in both), both  # both processed part of the traffic
    finally:
        await w2.stop()
        await w1.stop()
