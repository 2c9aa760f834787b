"""A real Prometheus scrapes a running worker, with the shipped alert rules loaded.

Needs the ``prometheus`` binary (Debian package ``prometheus``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from infra.processes import free_port
from infra.settings import Settings
from schemas import topics
from tests.integration.events import incident
from tests.integration.harness import WorkerProcess, eventually, publish, publish_events

RULES = Path(__file__).resolve().parents[2] / "infra" / "deploy" / "prometheus" / "garda-rules.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus not found: install the Debian package `prometheus` (apt-get install -y prometheus)",
)


@pytest.fixture
async def prometheus(worker: WorkerProcess, tmp_path: Path) -> AsyncIterator[str]:
    assert PROMETHEUS is not None
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: garda
    static_configs:
      - targets: ["127.0.0.1:{worker.port}"]
"""
    )
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def query(base: str, expr: str) -> list[dict[str, Any]]:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base}/api/v1/query", params={"query": expr}) as r,
        ):
            body = await r.json()
    except aiohttp.ClientError:
        return []  # not listening yet
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


async def test_prometheus_scrapes_a_worker_and_loads_the_rules(
    settings: Settings, worker: WorkerProcess, prometheus: str
) -> None:
    up = await eventually(
        lambda: query(prometheus, 'up{job="garda"}'), lambda r: scalar(r) == 1.0, timeout=60
    )
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{worker.port}"

    await publish_events(
        settings,
        topics.INCIDENTS,
        [incident(f"W-PROM-{i}", "detention", region="MY-01") for i in range(3)],
    )
    await publish(settings, topics.INCIDENTS, [(b"W-PROM-X", b"not json", None)])
    opened = (
        'garda_events_total{job="garda", topic="pmi.incidents.v1",'
        ' type="pmi.incident.reported", outcome="opened"}'
    )
    await eventually(lambda: query(prometheus, opened), lambda r: scalar(r) == 3.0, timeout=30)
    invalid = 'sum(garda_deadletters_total{topic="pmi.incidents.v1", reason="invalid"})'
    await eventually(lambda: query(prometheus, invalid), lambda r: scalar(r) == 1.0)
    cases = 'max without (instance) (garda_db_cases_open{post_id="KJRI-JOHOR-BAHRU"})'
    await eventually(lambda: query(prometheus, cases), lambda r: scalar(r) == 3.0)

    # The shipped rules are loaded and evaluate without errors against real series.
    async def rules() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(f"{prometheus}/api/v1/rules") as r:
            return (await r.json())["data"]["groups"]

    def evaluated(groups: list[dict[str, Any]]) -> bool:
        rs = [rule for g in groups for rule in g["rules"]]
        return len(rs) == 10 and all(r.get("lastEvaluation", "").startswith("2") for r in rs)

    groups = await eventually(rules, evaluated, timeout=20)
    health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
    assert set(health.values()) == {"ok"}, health
    firing = await query(prometheus, 'ALERTS{alertstate="firing"}')
    assert firing == []  # a healthy worker fires nothing
