"""The outbox relay: output events reach Kafka from the ``outbox`` table, at least once.

The processor calls ``publish(seqs)`` right after its batch transaction commits; ``sweep()``
runs on a timer and publishes what a crashed or stopped processor left behind.
Consumers dedupe on the CloudEvent ``id`` (stable across re-publication).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from types import TracebackType

from aiokafka import AIOKafkaProducer

from infra.db import Database
from infra.logging import get_logger
from infra.metrics import OUTBOX_PUBLISHED
from infra.store import decode_headers

log = get_logger("garda.outbox")


class OutboxRelay:
    def __init__(self, db: Database, bootstrap: str, *, sweep_age: float = 5.0) -> None:
        self.db = db
        self.bootstrap = bootstrap
        self.sweep_age = sweep_age
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.published = 0

    async def start(self) -> OutboxRelay:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                linger_ms=5,
                max_batch_size=1 << 20,
                enable_idempotence=False,  # Tansu has no idempotent producer (broker-notes §4)
            )
            await self._producer.start()
        return self

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> OutboxRelay:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _send(self, rows: Sequence) -> list[int]:
        assert self._producer is not None, "OutboxRelay is not started"
        futures = []
        for r in rows:
            fut = await self._producer.send(
                r["topic"],
                value=bytes(r["value"]),
                key=bytes(r["key"]) if r["key"] is not None else None,
                headers=decode_headers(r["headers"]),
            )
            futures.append(fut)
        await asyncio.gather(*futures)
        return [r["seq"] for r in rows]

    async def send_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Send one record and wait for the broker's acknowledgement (HTTP ingest, timers)."""
        assert self._producer is not None, "OutboxRelay is not started"
        await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)

    async def publish(self, seqs: Sequence[int]) -> int:
        """Publish these outbox rows and mark them published.

        Rows an earlier attempt left unpublished (seq below these) go first, in seq order, so
        that a worker's later state never reaches a topic before its earlier state (the
        compacted pmi.worker-state.v1 keeps the last one).
        """
        if not seqs:
            return 0
        async with self._lock:
            async with self.db.pool.acquire() as conn, conn.transaction():
                # Row locks (waited for, in seq order) keep another worker's sweep from
                # re-sending an older row after these: the last value on a topic stays the
                # newest.
                rows = await conn.fetch(
                    "SELECT seq, topic, key, value, headers FROM outbox"
                    " WHERE published_at IS NULL AND seq <= $1 ORDER BY seq LIMIT $2"
                    " FOR UPDATE",
                    max(seqs),
                    len(seqs) + 5000,
                )
                done = await self._send(rows)
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE seq = ANY($1)", done
                )
        self.published += len(done)
        OUTBOX_PUBLISHED.inc(len(done))
        return len(done)

    async def sweep(self, limit: int = 2000) -> int:
        """Publish rows left unpublished for longer than ``sweep_age`` seconds."""
        async with self._lock, self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT seq, topic, key, value, headers FROM outbox"
                " WHERE published_at IS NULL"
                "   AND created_at < now() - make_interval(secs => $1)"
                " ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
                self.sweep_age,
                limit,
            )
            if not rows:
                return 0
            done = await self._send(rows)
            await conn.execute("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)", done)
        self.published += len(done)
        OUTBOX_PUBLISHED.inc(len(done))
        log.info("outbox swept", published=len(done))
        return len(done)

    async def publish_with_retry(self, seqs: Sequence[int], attempts: int = 5) -> None:
        """Publish now if possible; on failure leave the rows to ``sweep`` (never lost)."""
        for attempt in range(attempts):
            try:
                await self.publish(seqs)
                return
            except Exception as exc:  # noqa: BLE001 - anything: the sweep will retry
                delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.warning("outbox publish failed", error=str(exc), retry_in=round(delay, 3))
                await asyncio.sleep(delay)
        log.warning("outbox publish deferred to sweep", rows=len(seqs))
