"""``garda repolicy`` against the real broker, database and ``garda worker`` processes.

A case opens under the default policy (unpaid wages: high, ack 24 h). The workers restart
with a policy of seconds; until ``garda repolicy`` runs the case keeps its 24 h deadline and
nothing escalates. After it, the case carries the new deadlines (timeline step
``garda.case.updated``) and escalates at once, since the new ack deadline has passed. A second
run finds nothing to change.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

from handlers.policy import load_policy
from infra.repolicy import repolicy
from infra.settings import Settings
from schemas import topics
from tests.integration.harness import (
    WorkerProcess,
    cloudevent,
    db_fetch,
    eventually,
    policy_file,
    publish_events,
)

FAST = policy_file("fast_sla.toml")


async def case_row(settings: Settings, wid: str) -> list:
    return await db_fetch(
        settings.database_url,
        "SELECT case_id, ack_due, resolve_due, escalation_level, opened_at FROM cases"
        " WHERE worker_id = $1",
        wid,
    )


async def test_repolicy_moves_open_cases_to_the_new_sla(settings: Settings, tmp_path: Path) -> None:
    wid = f"PMI-RP-{uuid.uuid4().hex[:6]}"
    slow = WorkerProcess(settings, tmp_path, "slow")
    await slow.start()
    try:
        await publish_events(
            settings,
            topics.INCIDENTS,
            [
                cloudevent(
                    "pmi.incident.reported",
                    {
                        "incident_id": "INC-RP-1",
                        "worker_id": wid,
                        "category": "unpaid_wages",
                        "occurred_at": "2026-11-28T10:00:00Z",
                        "country": "MY",
                        "region": "MY-01",
                        "reporter_type": "hotline",
                    },
                    source="kp2mi/hotline",
                )
            ],
        )
        [row] = await eventually(
            lambda: case_row(settings, wid), lambda rows: len(rows) == 1, timeout=20
        )
    finally:
        await slow.stop()
    assert row["ack_due"] - row["opened_at"] == timedelta(hours=24)

    fast_settings = settings.replace(policy=FAST)
    fast = WorkerProcess(fast_settings, tmp_path, "fast")
    await fast.start()
    try:
        await asyncio.sleep(2.0)  # several timer ticks: the stored 24 h deadline holds
        [still] = await case_row(settings, wid)
        assert still["escalation_level"] == 0 and still["ack_due"] == row["ack_due"]

        policy = load_policy(FAST)
        dry = await repolicy(fast_settings, policy, dry_run=True)
        [planned] = [c for c in dry.changes if c.worker_id == wid]
        assert dry.sent == 0
        assert set(planned.fields) == {"ack_due", "resolve_due"}

        report = await repolicy(fast_settings, policy)
        assert report.sent == len(report.changes) >= 1
        sla = policy.sla["high"]
        [moved] = await eventually(
            lambda: case_row(settings, wid),
            lambda rows: rows and rows[0]["escalation_level"] >= 1,
            timeout=20,
        )
        assert moved["ack_due"] == row["opened_at"] + sla.ack
        assert moved["resolve_due"] == row["opened_at"] + sla.resolve
        steps = await db_fetch(
            settings.database_url,
            "SELECT type, detail FROM case_timeline WHERE case_id = $1 ORDER BY at, entry_id",
            row["case_id"],
        )
        updates = [s for s in steps if s["type"] == "garda.case.updated"]
        assert len(updates) == 1, steps
        # Once applied, a second run finds nothing to change for this case.
        again = await repolicy(fast_settings, policy, dry_run=True)
        assert [c for c in again.changes if c.worker_id == wid] == []
    finally:
        await fast.stop()
