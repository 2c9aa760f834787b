"""The urgent lane (``streams.lanes``): an incident published behind a large backlog of
insurer claims is handled before most of the backlog, and the backlog is still applied once
and in order per topic-partition. Order facts from the database, no timings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from infra.settings import Settings
from schemas import topics
from tests.integration.events import incident
from tests.integration.harness import WorkerProcess, db_fetch, eventually, publish_events
from tests.integration.test_claims import filed

BACKLOG = 12_000  # claims, 8 per worker
FILED = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


async def test_an_incident_overtakes_a_claims_backlog_applied_once_in_order(
    settings: Settings, tmp_path: Path
) -> None:
    wid = "W-LANE-SOS"
    others = [f"W-LANE-{i:05d}" for i in range(BACKLOG // 8 - 1)]
    # The SOS worker's own claim is in the backlog, filed for the incident that comes after
    # it on the other lane: whichever is applied first, the claim ends up on the case.
    claims = [filed(wid, "JKK-LANE-SOS", FILED, incident_id="INC-LANE-SOS")]
    claims += [
        filed(others[i % len(others)], f"JKK-LANE-{i:06d}", FILED) for i in range(BACKLOG - 1)
    ]
    await publish_events(settings, topics.CLAIMS, claims)
    # Published before the worker starts, so the whole backlog is waiting when it arrives.
    # (Published after the start, the worker had already applied a third of the claims on a
    # quiet machine before the incident reached the broker: a race with the test, not a lane.)
    await publish_events(
        settings, topics.INCIDENTS, [incident(wid, "trafficking", incident_id="INC-LANE-SOS")]
    )

    w = WorkerProcess(settings, tmp_path, "w1")
    await w.start()
    try:
        url = settings.database_url
        await eventually(
            lambda: db_fetch(
                url, "SELECT 1 FROM processed_events WHERE type = 'pmi.incident.reported'"
            ),
            lambda rows: len(rows) == 1,
            timeout=60,
        )
        await eventually(
            lambda: db_fetch(url, "SELECT count(*) AS n FROM processed_events"),
            lambda rows: rows[0]["n"] == BACKLOG + 1,
            timeout=240,
        )
        # The incident overtook most of the backlog published before it: its transaction
        # (processed_at is the transaction's start) began before that of most claims. (With
        # one agent for every topic it waited behind the buffered claims: about half.)
        [row] = await db_fetch(
            url,
            "SELECT count(*) FILTER (WHERE c.processed_at > i.processed_at) AS after"
            " FROM processed_events c, processed_events i"
            " WHERE c.type = 'pmi.claim.filed' AND i.type = 'pmi.incident.reported'",
        )
        assert row["after"] > BACKLOG * 2 // 3, row["after"]
        # Applied once: one claim row each, one "event handled" line per input, nothing
        # dead-lettered; the early claim is linked to the one case.
        [row] = await db_fetch(url, "SELECT count(*) AS n FROM claims")
        assert row["n"] == BACKLOG
        assert w.log_text().count('"event handled"') == BACKLOG + 1
        assert await db_fetch(url, "SELECT topic, error FROM deadletters") == []
        cases = await db_fetch(
            url,
            "SELECT doc->>'case_id' AS id FROM cases WHERE worker_id = $1"
            " AND doc->>'kind' = 'protection'",
            wid,
        )
        assert len(cases) == 1
        [claim] = await db_fetch(
            url, "SELECT doc->>'case_id' AS case_id FROM claims WHERE claim_id = 'JKK-LANE-SOS'"
        )
        assert claim["case_id"] == cases[0]["id"]
        # In order per topic-partition: a later offset never began its transaction earlier.
        inverted = await db_fetch(
            url,
            'SELECT topic, partition, "offset" FROM ('
            '  SELECT topic, partition, "offset", processed_at,'
            '   lag(processed_at) OVER (PARTITION BY topic, partition ORDER BY "offset") AS prev'
            "  FROM processed_events) t WHERE processed_at < prev",
        )
        assert inverted == []
    finally:
        await w.stop()
