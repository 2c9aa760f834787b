"""Silent sources on a real worker: silent once, recovered once, across restarts."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from handlers.policy import DEFAULT_POLICY_PATH
from infra.settings import Settings
from schemas import topics
from tests.integration.harness import (
    WorkerProcess,
    cloudevent,
    db_fetch,
    eventually,
    publish_events,
    read_topic,
)
from tests.integration.test_metrics import get, scrape

FEED = "test/embarkation-feed"


def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(
        DEFAULT_POLICY_PATH.read_text()
        + f'\n[[sources]]\nsource = "{FEED}"\nname = "Test feed"\nmax_silence = "4s"\n'
        'severity = "critical"\n'
    )
    return path


def departure(wid: str) -> dict:
    data = {
        "worker_id": wid,
        "destination_country": "HK",
        "departed_at": "2026-11-20T08:00:00Z",
        "scheme": "g2g",
        "employer_type": "legal_entity",
        "visa_type": "work",
    }
    return cloudevent("pmi.departure.recorded", data, source=FEED, id=uuid.uuid4().hex)


async def source_alerts(settings: Settings) -> list[dict]:
    records = await read_topic(settings, topics.ALERTS, timeout=3)
    out = [json.loads(r.value) for r in records]
    return [a for a in out if a["type"].startswith("garda.alert.source-")]


async def test_silent_then_recovered_once_each_across_restarts(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings.replace(policy=policy(tmp_path))
    a = await WorkerProcess(s, tmp_path, "a").start()
    try:
        await publish_events(s, topics.DEPARTURES, [departure("W-SRC-1")])
        alerts = await eventually(lambda: source_alerts(s), lambda x: len(x) >= 1, timeout=30)
        m = await scrape(a.url)
        assert get(m, "garda_db_source_silent", source=FEED) == 1
        assert get(m, "garda_alerts_total", alert="source-silent") == 1
        assert get(m, "garda_db_source_silence_seconds", source=FEED) > 4
    finally:
        await a.stop()
    [silent] = alerts
    assert silent["type"] == "garda.alert.source-silent"
    assert silent["subject"] == FEED and silent["source"] == "garda"
    data = silent["data"]
    assert data["source"] == FEED and data["episode"] == 1
    assert data["post_id"] == "HQ" and data["severity"] == "critical"
    assert data["max_silence_seconds"] == 4 and data["last_seen_at"] == data["silent_since"]

    # A new worker (the state is in PostgreSQL): still silent, but no second alert.
    b = await WorkerProcess(s, tmp_path, "b").start()
    try:
        await asyncio.sleep(3)
        assert [x["id"] for x in await source_alerts(s)] == [silent["id"]]
        await publish_events(s, topics.DEPARTURES, [departure("W-SRC-2")])
        both = await eventually(lambda: source_alerts(s), lambda x: len(x) >= 2, timeout=20)
    finally:
        await b.stop()
    recovered = both[1]
    assert recovered["type"] == "garda.alert.source-recovered"
    assert (
        recovered["data"]["episode"] == 1
        and recovered["data"]["silent_since"] == data["silent_since"]
    )
    assert recovered["data"]["silent_seconds"] > 4

    # Restarted again and left silent: a second silence (episode 2), never a second
    # recovered or a repeat of episode 1.
    c = await WorkerProcess(s, tmp_path, "c").start()
    try:
        final = await eventually(lambda: source_alerts(s), lambda x: len(x) >= 3, timeout=30)
        await asyncio.sleep(2)
        final = await source_alerts(s)
    finally:
        await c.stop()
    kinds = [(x["type"].rsplit(".", 1)[1], x["data"]["episode"]) for x in final]
    assert kinds == [("source-silent", 1), ("source-recovered", 1), ("source-silent", 2)]
    assert len({x["id"] for x in final}) == 3
    rows = await db_fetch(
        s.database_url or "", "SELECT silent, episode FROM source_watch WHERE source = $1", FEED
    )
    assert [tuple(r) for r in rows] == [(True, 2)]
