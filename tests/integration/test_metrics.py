"""/metrics of a real worker after a known scenario: names and values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.settings import Settings
from schemas import topics
from tests.integration.events import incident
from tests.integration.harness import (
    WorkerProcess,
    eventually,
    get_json,
    policy_file,
    publish,
    publish_events,
)

POLICY = policy_file("fast_sla.toml")  # critical: ack 3 s -> level 1, 6 s -> level 2
INCIDENTS = topics.INCIDENTS


async def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def get(m: dict, name: str, **labels: str) -> float | None:
    return m.get((name, frozenset(labels.items())))


@pytest.fixture
async def fast_worker(settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    w = WorkerProcess(settings.replace(policy=POLICY), tmp_path, "metrics")
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def test_counters_and_gauges_after_three_valid_and_one_invalid_event(
    settings: Settings, fast_worker: WorkerProcess
) -> None:
    url = fast_worker.url
    events = [incident(f"W-MET-{i}", "detention", region="MY-01") for i in range(3)]
    await publish_events(settings, INCIDENTS, events)
    await publish(settings, INCIDENTS, [(b"W-MET-X", b"{not json", None)])

    def handled(m: dict) -> bool:
        return get(m, "garda_events_total", topic=INCIDENTS, type="unknown", outcome="invalid") == 1

    m = await eventually(lambda: scrape(url), handled, timeout=30)
    opened = dict(topic=INCIDENTS, type="pmi.incident.reported", outcome="opened")
    assert get(m, "garda_events_total", **opened) == 3
    assert get(m, "garda_deadletters_total", topic=INCIDENTS, reason="invalid") == 1
    # Database-wide: the three critical cases at the post that covers Johor.
    open_johor = dict(post_id="KJRI-JOHOR-BAHRU", severity="critical")
    m = await eventually(
        lambda: scrape(url), lambda m: get(m, "garda_db_cases_open", **open_johor) == 3
    )
    assert get(m, "garda_db_up") == 1
    assert get(m, "garda_db_deadletters") == 1
    # Every input partition this worker holds has a lag series.
    assert get(m, "garda_consumer_assigned_partitions") == len(topics.INPUTS) * settings.partitions
    lags = [k for k in m if k[0] == "garda_consumer_lag"]
    assert len(lags) == len(topics.INPUTS) * settings.partitions

    # Both levels fire for each case (3 s and 6 s after opening), each once, soon after due.
    def escalated(m: dict) -> bool:
        return get(m, "garda_escalations_total", level="2") == 3

    m = await eventually(lambda: scrape(url), escalated, timeout=40)
    assert get(m, "garda_escalations_total", level="1") == 3
    assert get(m, "garda_alerts_total", alert="escalated") == 6
    assert get(m, "garda_escalation_lateness_seconds_count") == 6
    assert get(m, "garda_escalation_lateness_seconds_bucket", le="10.0") == 6
    assert get(m, "garda_escalation_lateness_seconds_sum") < 6 * 5.0
    assert (
        get(
            m,
            "garda_events_total",
            topic=topics.COMMANDS,
            type="garda.deadline.due",
            outcome="escalated",
        )
        == 6
    )
    assert get(m, "garda_events_total", **opened) == 3  # nothing counted twice
    m = await eventually(lambda: scrape(url), lambda m: get(m, "garda_db_outbox_backlog") == 0)
    assert get(m, "garda_outbox_published_total") >= 3 + 1 + 6

    _, health = await get_json(f"{url}/health")
    assert health["status"] == "ok" and health["failing"] == []
