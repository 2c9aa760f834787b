"""examples/monitor.py: the live feed against the real broker, and its webhook receiver."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from datetime import UTC, datetime

from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks.webhooks import Webhook

from infra.settings import Settings
from schemas import topics
from tests.integration.events import incident
from tests.integration.harness import REPO, WorkerProcess, publish_events

EXAMPLE = REPO / "examples" / "monitor.py"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def load_example():
    spec = importlib.util.spec_from_file_location("garda_monitor_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_feed_prints_cases_and_alerts(settings: Settings, worker: WorkerProcess) -> None:
    await publish_events(
        settings, topics.INCIDENTS, [incident("W-MON-1", "detention", region="MY-01")]
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "feed",
        "--bootstrap",
        settings.kafka_bootstrap,
        "--prefix",
        settings.topic_prefix,
        "--group",
        "monitor-test",
        "--seconds",
        "20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=90)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "as group monitor-test" in text
    opened = [line for line in text.splitlines() if "garda.case.opened subject=W-MON-1" in line]
    assert len(opened) == 1, text
    assert "post_id=KJRI-JOHOR-BAHRU" in opened[0] and "severity=critical" in opened[0]


async def test_webhook_receiver_verifies_and_dedupes(capsys) -> None:
    app = load_example().webhook_app(SECRET)
    body = json.dumps(
        {"type": "garda.alert.escalated", "subject": "W-1", "data": {"case_id": "C-1"}}
    )
    now = datetime.now(UTC)
    sig = Webhook(SECRET).sign("msg_1", now, body)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sig,
        "content-type": "application/json",
    }
    async with TestClient(TestServer(app)) as client:
        first = await client.post("/", data=body, headers=headers)
        again = await client.post("/", data=body, headers=headers)
        forged = await client.post("/", data=body.replace("C-1", "C-2"), headers=headers)
        unsigned = await client.post("/", data=body, headers={"webhook-id": "msg_2"})
    assert (first.status, again.status, forged.status, unsigned.status) == (204, 200, 401, 401)
    printed = capsys.readouterr().out
    assert printed.count("webhook: ") == 3  # one accepted, two rejected
    assert "garda.alert.escalated subject=W-1 case_id=C-1" in printed
