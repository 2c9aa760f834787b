"""Retention: delete operational rows older than the policy says (``[retention]``).

``prune()`` is what ``garda prune`` and every worker's prune timer run. These tables grow with
traffic and are pruned, oldest first:

| table              | age column     | kept                                              |
|--------------------|----------------|---------------------------------------------------|
| ``outbox``         | ``published_at`` | unpublished rows, always (they still must reach Kafka) |
| ``deadletters``    | ``received_at``  |                                                   |
| ``audit_log``      | ``at``           |                                                   |
| ``processed_events`` | ``processed_at`` | the event dedup window (``retention.processed_events``, >= 7 d) |
| ``hook_deliveries`` (with their ``hook_attempts`` and ``hook_alerts``) | ``delivered_at``, else ``created_at`` | pending deliveries, always (they still must reach their receiver) |
| ``hook_alerts`` (silenced, never sent) | ``created_at`` | held alerts (they go out with a later delivery) |
| ``hook_ack_links`` | ``used_at``, else ``expires_at`` | unused links that have not expired |

The case record (workers, cases, claims, case_timeline) is never pruned.

Rules decided where the design is silent:
- Ages count from the database clock (``now()`` of the server, read once per run), so a
  worker with a skewed clock cannot prune early.
- Rows go in chunks of ``retention.batch``, one short autocommitted ``DELETE`` each (rows a
  concurrent transaction holds are skipped, ``SKIP LOCKED``, and taken next run): no lock is
  held longer than one chunk, and a stop in the middle leaves nothing half done.
- One pruner at a time: a run holds the session advisory lock ``PRUNE_LOCK`` on its own
  connection; a worker that finds it taken skips that run (the other one is doing the work).
- ``dry_run`` counts what would go, deletes nothing, and takes no lock.
- A delivery goes with its attempts and the alerts it listed, in one statement (the foreign
  keys never see a half-deleted delivery); all three age by ``retention.hooks``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from handlers.policy import Retention
from infra.logging import get_logger

log = get_logger("garda.retention")

PRUNE_LOCK = 0x6761_7264_0006  # advisory lock id: one pruner at a time


@dataclass(frozen=True)
class Target:
    table: str
    age: str  # the timestamp column rows are aged by
    key: str  # the row's identity (primary key columns)
    keep: str = ""  # an extra condition a prunable row must meet
    setting: str = ""  # the Retention field with the maximum age
    kept: str = ""  # the rows as old as the cutoff that are kept on purpose (for the report)
    children: tuple[str, ...] = ()  # tables referencing ``key`` deleted in the same statement

    def where(self) -> str:
        return f"{self.age} < $1" + (f" AND {self.keep}" if self.keep else "")


TARGETS: tuple[Target, ...] = (
    Target(
        "outbox",
        "published_at",
        "seq",
        keep="published_at IS NOT NULL",
        setting="outbox",
        kept="published_at IS NULL AND created_at < $1",
    ),
    Target("deadletters", "received_at", "seq", setting="deadletters"),
    Target("audit_log", "at", "seq", setting="audit_log"),
    Target("processed_events", "processed_at", "source, id", setting="processed_events"),
    Target(
        "hook_deliveries",
        "coalesce(delivered_at, created_at)",
        "delivery_id",
        keep="status <> 'pending'",
        setting="hooks",
        kept="status = 'pending' AND created_at < $1",
        children=("hook_attempts", "hook_alerts"),
    ),
    Target(
        "hook_alerts",
        "created_at",
        "receiver, alert_id",
        keep="disposition = 'silenced' AND delivery_id IS NULL",
        setting="hooks",
        kept="disposition = 'held' AND delivery_id IS NULL AND created_at < $1",
    ),
    Target("hook_ack_links", "coalesce(used_at, expires_at)", "link_id", setting="hooks"),
)

Progress = Callable[[str, int, int], None]  # (table, rows so far, rows expected)


@dataclass
class TableReport:
    table: str
    older_than: datetime  # the cutoff: rows aged before it are (or would be) pruned
    eligible: int  # rows past the cutoff when the run started
    deleted: int = 0  # rows deleted (0 in a dry run)
    kept: int = 0  # rows past the cutoff kept on purpose (unpublished outbox rows)


@dataclass
class PruneReport:
    dry_run: bool
    skipped: bool = False  # another pruner held the lock
    tables: list[TableReport] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.tables)


async def prune(
    conn: asyncpg.Connection,
    retention: Retention,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    pause: float = 0.0,
) -> PruneReport:
    """Prune every table of ``TARGETS`` on ``conn`` (outside a transaction; see module doc).

    ``pause`` seconds are slept between chunks, to leave room to the processors.
    """
    report = PruneReport(dry_run=dry_run)
    if not dry_run and not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK):
        report.skipped = True
        return report
    try:
        now: datetime = await conn.fetchval("SELECT now()")
        for target in TARGETS:
            max_age: timedelta = getattr(retention, target.setting)
            report.tables.append(
                await _prune_table(
                    conn, target, now - max_age, retention.batch, dry_run, progress, pause
                )
            )
    finally:
        if not dry_run:
            await conn.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK)
    return report


async def _prune_table(
    conn: asyncpg.Connection,
    target: Target,
    cutoff: datetime,
    batch: int,
    dry_run: bool,
    progress: Progress | None,
    pause: float,
) -> TableReport:
    t = target.table
    eligible = await conn.fetchval(f"SELECT count(*) FROM {t} WHERE {target.where()}", cutoff)
    kept = 0
    if target.kept:
        kept = await conn.fetchval(f"SELECT count(*) FROM {t} WHERE {target.kept}", cutoff)
    rep = TableReport(t, cutoff, eligible, kept=kept)
    if dry_run or not eligible:
        if progress:
            progress(t, 0, eligible)
        return rep
    children = "".join(
        f", gone_{i} AS (DELETE FROM {c} WHERE ({target.key}) IN (SELECT {target.key} FROM doomed))"
        for i, c in enumerate(target.children)
    )
    delete = (
        f"WITH doomed AS (SELECT {target.key} FROM {t} WHERE {target.where()}"
        f" ORDER BY {target.age} LIMIT $2 FOR UPDATE SKIP LOCKED){children}"
        f" DELETE FROM {t} WHERE ({target.key}) IN (SELECT {target.key} FROM doomed)"
    )
    while True:
        status = await conn.execute(delete, cutoff, batch)
        n = int(status.rsplit(" ", 1)[-1])
        rep.deleted += n
        if progress:
            progress(t, rep.deleted, eligible)
        if n < batch:
            break
        await asyncio.sleep(pause)
    return rep
