"""An ``alertmanager`` receiver against the real binary (Debian ``prometheus-alertmanager``):
the dispatcher posts to ``{url}/api/v2/alerts`` and Alertmanager keeps the alert with the
labels operators route on (post, severity, kind, case_id, alert type)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from infra.db import Database
from infra.processes import free_port
from tests.integration.test_hooks_delivery import (
    alert,
    all_done,
    dispatcher,
    enqueue,
    make_hooks,
    pump,
    rows,
)

pytestmark = pytest.mark.integration

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

CONFIG = """
route:
  receiver: "null"
  group_wait: 1h
receivers:
  - name: "null"
"""


@pytest.fixture
async def alertmanager(tmp_path: Path):
    if BINARY is None:
        pytest.skip(
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager;"
            " .ci/run installs it)"
        )
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG)
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "wb")
    proc = subprocess.Popen(
        [
            BINARY,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: a single, private instance
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        "alertmanager exited:\n" + (tmp_path / "alertmanager.log").read_text()
                    )
                try:
                    async with http.get(f"{url}/-/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("alertmanager not ready in 30 s")
                await asyncio.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_alerts_reach_a_real_alertmanager_with_routing_labels(
    db: Database,
    alertmanager: str,
    tmp_path: Path,
) -> None:
    hooks = make_hooks(tmp_path, [{"name": "am", "type": "alertmanager", "url": alertmanager}])
    d = await dispatcher(db, hooks, "d1").start()
    try:
        a = alert("escalated", case_id="CASE-AM-1", severity="critical", post="KBRI-DOHA", level=2)
        assert await enqueue(db, hooks, [a]) == 1
        await pump(d, until=lambda: all_done(db))
        (att,) = await rows(db, "SELECT outcome, status_code FROM hook_attempts")
        assert att["outcome"] == "delivered" and att["status_code"] == 200

        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{alertmanager}/api/v2/alerts", params={"filter": 'case_id="CASE-AM-1"'}
            ) as r,
        ):
            assert r.status == 200
            found = await r.json()
        (got,) = found
        labels = got["labels"]
        assert labels["alertname"] == "garda_alert_escalated"
        assert labels["alert_type"] == "garda.alert.escalated"
        assert labels["post"] == "KBRI-DOHA"
        assert labels["severity"] == "critical"
        assert labels["kind"] == "protection"
        assert labels["case_id"] == "CASE-AM-1"
        assert labels["worker_id"] == "W-1"
        assert labels["level"] == "2"
        assert got["annotations"]["ack_url"].startswith("http://garda.test/ack/")
        assert got["annotations"]["alert_id"] == a["id"]
        assert got["status"]["state"] == "active"
        assert got["generatorURL"] == "http://garda.test/api/cases/CASE-AM-1"
    finally:
        await d.stop()
