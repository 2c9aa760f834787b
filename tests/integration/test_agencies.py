"""The agency (P3MI) scorecard against a real ``garda worker``, broker and database, with the
alert rule lowered to 50 per 100 placements and at least 4 placements: the crossing alerts
headquarters once; ``GET /api/agencies`` and ``garda report agencies --csv`` agree."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from handlers.policy import DEFAULT_POLICY_PATH
from infra.settings import Settings
from schemas import topics
from tests.integration import events
from tests.integration.harness import (
    WorkerProcess,
    bearer,
    db_fetch,
    eventually,
    get_json,
    new_token,
    publish_events,
    read_events,
    run_cli,
)


def low_threshold_policy(tmp: Path) -> Path:
    text = DEFAULT_POLICY_PATH.read_text()
    for old, new in (
        ("alert_rate_per_100 = 5.0", "alert_rate_per_100 = 50.0"),
        ("alert_min_placements = 20", "alert_min_placements = 4"),
    ):
        assert text.count(old) == 1
        text = text.replace(old, new)
    path = tmp / "agencies.toml"
    path.write_text(text)
    return path


@pytest.fixture
def agency_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(policy=low_threshold_policy(tmp_path))


@pytest.fixture
async def agency_worker(agency_settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    w = WorkerProcess(agency_settings, tmp_path, "w1")
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


def departure(wid: str, lic: str) -> dict[str, Any]:
    return events.departure(wid, "TW", p3mi_license=lic)


def incident(wid: str) -> dict[str, Any]:
    return events.incident(wid, country="TW", region=None)


async def test_scorecard_and_alert(agency_settings: Settings, agency_worker: WorkerProcess) -> None:
    settings, url = agency_settings, agency_worker.url
    _, hq = await new_token(settings, hq=True)
    tag = uuid.uuid4().hex[:6]
    lic = f"SIP3MI-T-{tag}"
    wids = [f"W-AG-{i}-{tag}" for i in range(4)]
    await publish_events(settings, topics.DEPARTURES, [departure(w, lic) for w in wids])
    await eventually(
        lambda: db_fetch(
            settings.database_url,
            "SELECT count(*) AS n FROM agency_placements WHERE license = $1",
            lic,
        ),
        lambda r: r[0]["n"] == 4,
        timeout=20,
    )
    await publish_events(settings, topics.INCIDENTS, [incident(wids[0])])
    await eventually(
        lambda: db_fetch(
            settings.database_url, "SELECT count(*) AS n FROM agency_cases WHERE license = $1", lic
        ),
        lambda r: r[0]["n"] == 1,
        timeout=20,
    )
    # 25 per 100: below the rule; then 50 per 100 with 4 placements: the crossing
    await publish_events(settings, topics.INCIDENTS, [incident(wids[1]), incident(wids[2])])
    status, body = await eventually(
        lambda: get_json(f"{url}/api/agencies?license={lic}", headers=bearer(hq)),
        lambda r: r[0] == 200 and r[1]["agencies"] and r[1]["agencies"][0]["cases"] == 3,
        timeout=20,
    )
    (card,) = body["agencies"]
    assert card["placements"] == 4 and card["cases_per_100"] == 75.0
    assert card["by_category"] == {"unpaid_wages": {"cases": 3, "per_100": 75.0}}
    assert card["over_threshold"] is True

    alerts = [
        v
        for _, v in await read_events(settings, topics.ALERTS)
        if v and v["type"] == "garda.alert.agency-threshold" and v["data"]["license"] == lic
    ]
    assert len(alerts) == 1, alerts
    assert alerts[0]["data"]["post_id"] == "HQ"
    assert alerts[0]["data"]["placements"] == 4

    # post tokens may not read the scorecard
    _, post = await new_token(settings, posts=["KDEI-TAIPEI"])
    assert (await get_json(f"{url}/api/agencies", headers=bearer(post)))[0] == 403
    assert (await get_json(f"{url}/api/agencies?since=yesterday", headers=bearer(hq)))[0] == 400

    out = run_cli(settings, "report", "agencies", "--since", "2026-01-01", "--csv")
    assert out.returncode == 0, out.stderr
    rows = {r["license"]: r for r in csv.DictReader(io.StringIO(out.stdout))}
    assert rows[lic]["placements"] == "4" and rows[lic]["cases"] == "3"
    assert rows[lic]["cases_per_100"] == "75.0"
