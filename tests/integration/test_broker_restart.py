"""The broker goes away and comes back: the worker recovers by itself, nothing is doubled.

The embedded broker keeps nothing (memory storage), so it comes back empty: the test creates
the topics again and the producer republishes what it had sent, as ``bench.chaos`` does (a
production Kafka cluster keeps its log and the group's offsets instead). Every event must be
applied once: the republished ones are recognised by their (source, id).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from infra.broker import EmbeddedBroker
from infra.kafka_admin import ensure_topics
from infra.processes import free_port
from infra.settings import Settings
from schemas import topics
from tests.integration.harness import (
    WorkerProcess,
    cloudevent,
    db_fetch,
    eventually,
    publish_events,
)


def incidents(tag: str, n: int) -> list[dict]:
    return [
        cloudevent(
            "pmi.incident.reported",
            {
                "incident_id": f"INC-{tag}-{i}",
                "worker_id": f"PMI-BR-{tag}-{i}",
                "category": "unpaid_wages",
                "occurred_at": "2026-11-28T10:00:00Z",
                "country": "MY",
                "region": "MY-01",
                "reporter_type": "hotline",
            },
            source="kp2mi/hotline",
        )
        for i in range(n)
    ]


async def counts(url: str) -> tuple[int, int]:
    [row] = await db_fetch(
        url,
        "SELECT (SELECT count(*) FROM processed_events WHERE source = 'kp2mi/hotline'),"
        " (SELECT count(*) FROM cases)",
    )
    return row[0], row[1]


async def test_worker_recovers_from_a_broker_restart_without_doubling(
    database_url: str, tmp_path: Path
) -> None:
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    await broker.start()
    prefix = f"br{uuid.uuid4().hex[:6]}."
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=database_url,
        topic_prefix=prefix,
        # Tansu creates a topic a client asks for (with 4 partitions) and the worker asks
        # again as soon as the new broker listens, often before the topics are created
        # here; with the same count both orders give the same topics. Production Kafka
        # runs with auto.create.topics.enable=false (infra/deploy/compose.yaml) and keeps
        # its topics through a restart anyway.
        partitions=4,
        group_id=f"{prefix}garda",
        session_timeout=6.0,
        timer_interval=0.5,
    )
    worker = WorkerProcess(settings, tmp_path, "w1")
    try:
        await ensure_topics(settings.kafka_bootstrap, settings)
        await worker.start()
        before = incidents("A", 20)
        await publish_events(settings, topics.INCIDENTS, before)
        await eventually(lambda: counts(database_url), lambda c: c == (20, 20), timeout=30)

        await broker.stop()
        await broker.start()  # same port, empty
        await ensure_topics(settings.kafka_bootstrap, settings)
        after = incidents("B", 10)
        await publish_events(settings, topics.INCIDENTS, before + after)
        await eventually(lambda: counts(database_url), lambda c: c == (30, 30), timeout=90)
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
        # Nothing more arrives later: the republished 20 were recognised, not applied again.
        timeline = await db_fetch(
            database_url,
            "SELECT count(*) FROM case_timeline WHERE type = 'garda.case.opened'",
        )
        assert timeline[0][0] == 30
        # Applied twice, an incident would join its own case as a second report.
        reports = await db_fetch(database_url, "SELECT reports, count(*) FROM cases GROUP BY 1")
        assert [tuple(r) for r in reports] == [(1, 30)]
    finally:
        await worker.stop()
        await broker.stop()
