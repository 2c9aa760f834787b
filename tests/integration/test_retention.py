"""Retention on real PostgreSQL: what ``garda prune`` removes, and what it must never remove."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from handlers.policy import DEFAULT_POLICY_PATH, load_policy
from infra.db import migrate
from infra.retention import PRUNE_LOCK, prune
from infra.settings import Settings
from infra.store import claim_new
from tests.integration.harness import WorkerProcess

RETENTION = load_policy().retention  # outbox 7d, deadletters 90d, audit 365d, dedup 30d
DAY = timedelta(days=1)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    await migrate(c)
    try:
        yield c
    finally:
        await c.close()


async def _outbox(conn: asyncpg.Connection, event_id: str, age: timedelta, published: bool) -> None:
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, value, created_at, published_at)"
        " VALUES ($1, 'pmi.cases.v1', '\\x7b7d', now() - $2::interval,"
        " CASE WHEN $3 THEN now() - $2::interval END)",
        event_id,
        age,
        published,
    )


async def _processed(conn: asyncpg.Connection, source: str, event_id: str, age: timedelta) -> None:
    await conn.execute(
        "INSERT INTO processed_events (source, id, type, processed_at)"
        " VALUES ($1, $2, 'pmi.incident.reported', now() - $3::interval)",
        source,
        event_id,
        age,
    )


async def _ids(conn: asyncpg.Connection, sql: str) -> set[str]:
    return {r[0] for r in await conn.fetch(sql)}


async def test_prune_never_removes_unpublished_outbox_rows_or_dedup_ids_in_window(
    conn: asyncpg.Connection,
) -> None:
    await _outbox(conn, "old-published", 8 * DAY, published=True)
    await _outbox(conn, "old-unpublished", 400 * DAY, published=False)
    await _outbox(conn, "new-published", 6 * DAY, published=True)
    await _processed(conn, "src", "outside-window", 31 * DAY)
    await _processed(conn, "src", "inside-window", 29 * DAY)
    await conn.execute(
        'INSERT INTO deadletters (topic, partition, "offset", error, received_at) VALUES'
        " ('pmi.incidents.v1', 0, 1, 'old', now() - interval '91 days'),"
        " ('pmi.incidents.v1', 0, 2, 'new', now() - interval '89 days')"
    )
    await conn.execute(
        "INSERT INTO audit_log (at, method, path, status, event_id) VALUES"
        " (now() - interval '366 days', 'POST', '/api/events', 401, 'old'),"
        " (now() - interval '364 days', 'POST', '/api/events', 401, 'new')"
    )

    report = await prune(conn, RETENTION)

    assert not report.skipped
    by_table = {t.table: t for t in report.tables}
    assert {t: r.deleted for t, r in by_table.items()} == {
        "outbox": 1,
        "deadletters": 1,
        "audit_log": 1,
        "processed_events": 1,
        "hook_deliveries": 0,
        "hook_alerts": 0,
        "hook_ack_links": 0,
    }
    assert by_table["outbox"].kept == 1  # the unpublished one, however old
    assert await _ids(conn, "SELECT event_id FROM outbox") == {"old-unpublished", "new-published"}
    assert await _ids(conn, "SELECT id FROM processed_events") == {"inside-window"}
    assert await _ids(conn, "SELECT error FROM deadletters") == {"new"}
    assert await _ids(conn, "SELECT event_id FROM audit_log") == {"new"}
    # The id inside the window is still a duplicate for the processor; the pruned one is not.
    assert await claim_new(conn, [("src", "inside-window"), ("src", "outside-window")]) == {
        ("src", "outside-window")
    }


async def test_prune_goes_in_bounded_chunks_and_reports_progress(conn: asyncpg.Connection) -> None:
    for i in range(10):
        await _outbox(conn, f"e{i}", 8 * DAY, published=True)
    await _outbox(conn, "pending", 8 * DAY, published=False)
    seen: list[tuple[str, int, int]] = []

    report = await prune(
        conn,
        dataclasses.replace(RETENTION, batch=3),
        progress=lambda table, done, total: seen.append((table, done, total)),
    )

    assert report.deleted == 10
    assert [s for s in seen if s[0] == "outbox"] == [
        ("outbox", 3, 10),
        ("outbox", 6, 10),
        ("outbox", 9, 10),
        ("outbox", 10, 10),
    ]
    assert await _ids(conn, "SELECT event_id FROM outbox") == {"pending"}


async def test_dry_run_counts_and_deletes_nothing(conn: asyncpg.Connection) -> None:
    await _outbox(conn, "old", 8 * DAY, published=True)
    await _processed(conn, "src", "old", 31 * DAY)

    report = await prune(conn, RETENTION, dry_run=True)

    assert report.dry_run and report.deleted == 0
    assert {t.table: t.eligible for t in report.tables}["outbox"] == 1
    assert {t.table: t.eligible for t in report.tables}["processed_events"] == 1
    assert await conn.fetchval("SELECT count(*) FROM outbox") == 1
    assert await conn.fetchval("SELECT count(*) FROM processed_events") == 1


async def test_one_pruner_at_a_time(conn: asyncpg.Connection, database_url: str) -> None:
    await _outbox(conn, "old", 8 * DAY, published=True)
    other = await asyncpg.connect(database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK)
        report = await prune(conn, RETENTION)
        assert report.skipped and report.deleted == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1
        await other.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK)
        assert (await prune(conn, RETENTION)).deleted == 1
    finally:
        await other.close()


async def test_garda_prune_command_dry_run_then_prune(
    conn: asyncpg.Connection,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from garda.cli import main

    await _outbox(conn, "old", 8 * DAY, published=True)
    await _outbox(conn, "pending", 8 * DAY, published=False)
    monkeypatch.setenv("GARDA_DATABASE_URL", database_url)

    assert await asyncio.to_thread(main, ["prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "outbox            would delete         1" in out
    assert "kept 1 unpublished" in out
    assert await conn.fetchval("SELECT count(*) FROM outbox") == 2

    assert await asyncio.to_thread(main, ["prune"]) == 0
    captured = capsys.readouterr()
    assert "outbox            deleted         1" in captured.out
    assert "outbox: 1/1 deleted" in captured.err
    assert await _ids(conn, "SELECT event_id FROM outbox") == {"pending"}


async def test_the_worker_prunes_on_its_timer(
    settings: Settings, tmp_path: Path, conn: asyncpg.Connection
) -> None:
    policy = tmp_path / "policy.toml"
    text = DEFAULT_POLICY_PATH.read_text("utf-8")
    policy.write_text(text.replace('interval = "1h"', 'interval = "1s"'))
    assert policy.read_text() != text
    await _outbox(conn, "old", 8 * DAY, published=True)
    await _outbox(conn, "pending", 8 * DAY, published=False)
    await conn.execute(
        "INSERT INTO audit_log (at, method, path, status) VALUES"
        " (now() - interval '366 days', 'POST', '/api/events', 401)"
    )
    w = WorkerProcess(settings.replace(policy=policy), tmp_path)
    await w.start()
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while await conn.fetchval("SELECT count(*) FROM audit_log") and (
            asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.2)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 0, w.tail()
        assert await _ids(conn, "SELECT event_id FROM outbox") == {"pending"}
        # The "pruned" line comes once every table is done (audit_log empties before that).
        while '"event": "pruned"' not in w.log_text() and (
            asyncio.get_running_loop().time() < deadline + 20
        ):
            await asyncio.sleep(0.2)
        assert '"event": "pruned"' in w.log_text(), w.tail()
    finally:
        await w.stop()


async def _delivery(
    conn: asyncpg.Connection, did: str, status: str, age: timedelta, *, alerts: int = 1
) -> None:
    """A delivery ``age`` old (created, and delivered then when delivered), one attempt,
    ``alerts`` alerts listed in it."""
    await conn.execute(
        "INSERT INTO hook_deliveries (delivery_id, receiver, group_key, status, attempts,"
        " next_attempt_at, created_at, delivered_at)"
        " VALUES ($1, 'duty', $1, $2, 1, now() - $3::interval, now() - $3::interval,"
        " CASE WHEN $2 = 'delivered' THEN now() - $3::interval END)",
        did,
        status,
        age,
    )
    await conn.execute(
        "INSERT INTO hook_attempts (delivery_id, attempt, dispatcher, started_at, outcome)"
        " VALUES ($1, 1, 'd1', now() - $2::interval, 'retry')",
        did,
        age,
    )
    for i in range(alerts):
        await _hook_alert(conn, f"{did}-a{i}", "queued", age, did)


async def _hook_alert(
    conn: asyncpg.Connection, alert_id: str, disposition: str, age: timedelta, did: str | None
) -> None:
    await conn.execute(
        "INSERT INTO hook_alerts (receiver, alert_id, alert_type, event, disposition,"
        " delivery_id, created_at)"
        " VALUES ('duty', $1, 'garda.alert.escalated', '{}', $2, $3, now() - $4::interval)",
        alert_id,
        disposition,
        did,
        age,
    )


async def _link(conn: asyncpg.Connection, link_id: str, expires: timedelta, used: bool) -> None:
    """``expires`` from now (negative: in the past); used when it was made, if ``used``."""
    await conn.execute(
        "INSERT INTO hook_ack_links (link_id, case_id, delivery_id, receiver, created_at,"
        " expires_at, used_at)"
        " VALUES ($1, 'C', 'dlv', 'duty', now() + $2::interval - interval '72 hours',"
        " now() + $2::interval, CASE WHEN $3 THEN now() + $2::interval - interval '72 hours' END)",
        link_id,
        expires,
        used,
    )


async def test_prune_hook_tables_never_a_pending_delivery_or_a_held_alert(
    conn: asyncpg.Connection,
) -> None:
    old, young = 40 * DAY, 2 * DAY  # retention.hooks is 30 days
    await _delivery(conn, "delivered-old", "delivered", old, alerts=2)
    await _delivery(conn, "failed-old", "failed", old)
    await _delivery(conn, "pending-old", "pending", 400 * DAY)  # receiver down for a year
    await _delivery(conn, "delivered-young", "delivered", young)
    await _hook_alert(conn, "silenced-old", "silenced", old, None)
    await _hook_alert(conn, "silenced-young", "silenced", young, None)
    await _hook_alert(conn, "held-old", "held", old, None)
    await _link(conn, "used-old", -38 * DAY, used=True)  # used 41 days ago
    await _link(conn, "expired-old", -35 * DAY, used=False)
    await _link(conn, "expired-young", -DAY, used=False)
    await _link(conn, "unused-live", DAY, used=False)

    dry = await prune(conn, RETENTION, dry_run=True)
    by_table = {t.table: t for t in dry.tables}
    assert by_table["hook_deliveries"].eligible == 2 and by_table["hook_deliveries"].kept == 1
    assert by_table["hook_alerts"].eligible == 1 and by_table["hook_alerts"].kept == 1
    assert by_table["hook_ack_links"].eligible == 2
    assert await conn.fetchval("SELECT count(*) FROM hook_deliveries") == 4  # nothing deleted

    report = await prune(conn, dataclasses.replace(RETENTION, batch=1))  # one row a chunk
    by_table = {t.table: t for t in report.tables}
    assert by_table["hook_deliveries"].deleted == 2
    assert await _ids(conn, "SELECT delivery_id FROM hook_deliveries") == {
        "pending-old",
        "delivered-young",
    }
    assert await _ids(conn, "SELECT DISTINCT delivery_id FROM hook_attempts") == {
        "pending-old",
        "delivered-young",
    }
    assert await _ids(conn, "SELECT alert_id FROM hook_alerts") == {
        "pending-old-a0",
        "delivered-young-a0",
        "silenced-young",
        "held-old",
    }
    assert await _ids(conn, "SELECT link_id FROM hook_ack_links") == {
        "expired-young",
        "unused-live",
    }
