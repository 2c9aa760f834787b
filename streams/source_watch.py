"""The silent-source check (policy ``[[sources]]``): runs on every worker's timer, acts on one.

Each tick, in one transaction: try the check's advisory lock (another worker holding it is
checking: skip), read each watched source's state row ``FOR UPDATE`` with the latest time it
spoke (``source_seen``, written by the processors in their batch transactions), apply the
pure ``handlers.sources.watch``, and write the new state together with the alert's outbox
row. A transition and its alert commit together or not at all, and the state lives in
PostgreSQL, so each alert is raised once across workers and restarts (a re-derived alert has
the same id and the outbox dedups it).

Rules decided where the design is silent:
- A worker judges only while it is caught up (it holds partitions, knows their high-water
  marks and is at most one batch behind): after a restart the backlog is read first, so an
  event published while Garda was down counts before silence is judged. Another worker's
  backlog is not visible to it; that can at worst raise a silence that recovers as soon as
  the backlog is handled.
- The clock is the worker's (the processors' clock); ``watched_since`` is the first check
  that saw the source in the policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from handlers.policy import ExpectedSource
from handlers.sources import SourceState, watch
from infra import metrics
from infra.logging import get_logger
from infra.store import BatchWrite, write_batch

log = get_logger("garda.sources")

LOCK_CLASS, LOCK_ID = 7303, 0


class SourceWatch:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.raised = 0

    async def check(self, now: datetime | None = None) -> int:
        """One check; returns the number of alerts raised (0 when another worker checks)."""
        rt = self.runtime
        expected: dict[str, ExpectedSource] = {s.source: s for s in rt.policy.sources}
        if not expected:
            return 0
        now = now or rt.processor.clock()
        names = sorted(expected)
        raised: list[tuple[str, dict[str, Any]]] = []
        async with rt.db.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1, $2)", LOCK_CLASS, LOCK_ID
            ):
                return 0
            await conn.execute(
                "INSERT INTO source_watch (source, watched_since, changed_at)"
                " SELECT unnest($1::text[]), $2, $2 ON CONFLICT (source) DO NOTHING",
                names,
                now,
            )
            rows = await conn.fetch(
                "SELECT w.source, w.watched_since, w.silent, w.silent_since, w.episode,"
                " (SELECT max(s.last_seen_at) FROM source_seen s WHERE s.source = w.source)"
                "   AS last_seen_at"
                " FROM source_watch w WHERE w.source = ANY($1) ORDER BY w.source FOR UPDATE OF w",
                names,
            )
            batch = BatchWrite()
            for r in rows:
                state = SourceState(
                    source=r["source"],
                    watched_since=r["watched_since"],
                    last_seen_at=r["last_seen_at"],
                    silent=r["silent"],
                    silent_since=r["silent_since"],
                    episode=r["episode"],
                )
                new, alert = watch(expected[state.source], state, now, rt.policy.headquarters)
                if alert is None:
                    continue
                await conn.execute(
                    "UPDATE source_watch SET silent = $2, silent_since = $3, episode = $4,"
                    " changed_at = $5 WHERE source = $1",
                    new.source,
                    new.silent,
                    new.silent_since,
                    new.episode,
                    now,
                )
                batch.outbox.append(rt.processor.outbox_row(alert, now))
                raised.append((alert.type, alert.data))
            seqs = await write_batch(conn, batch, rt.processor) if batch.outbox else []
        for type_, data in raised:
            metrics.ALERTS.labels(type_.removeprefix("garda.alert.")).inc()
            log.warning(
                type_.removeprefix("garda.alert.").replace("-", " "),
                source=data["source"],
                episode=data["episode"],
                silent_since=data["silent_since"],
            )
        self.raised += len(raised)
        if seqs:
            await rt.relay.publish_with_retry(seqs)
        return len(raised)


def caught_up(lag: dict[tuple[str, int], int | None], batch_size: int) -> bool:
    """Whether a worker may judge silence: it holds partitions, knows every one's high-water
    mark, and is at most one batch behind in all."""
    if not lag or any(n is None for n in lag.values()):
        return False
    return sum(n or 0 for n in lag.values()) <= batch_size
