"""``garda rebuild``: replay the input topics into an empty read model, in large batches.

The same ``BatchProcessor`` (and so the same handlers and dedup) as the live agent. Records of
all input topics are merged by their Kafka timestamp so that a worker's events are applied in
the order they were first handled. Output events derived during the rebuild go to the outbox
already marked published (their ids are the ones published the first time); pass
``republish=True`` to send them again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from errors import GardaError
from handlers.policy import Policy
from infra.db import Database, migrate
from infra.logging import get_logger
from infra.settings import Settings
from schemas import topics
from streams.processor import BatchProcessor, RawRecord

log = get_logger("garda.rebuild")

READ_MODEL_TABLES = (
    "workers",
    "cases",
    "claims",
    "case_timeline",
    "processed_events",
    "deadletters",
    "outbox",
)


async def _read_all(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], progress: bool
) -> list[tuple]:
    """Every record of the given partitions up to their high-water marks."""
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    out: list[tuple] = []
    idle = 0
    last = time.monotonic()
    while idle < 3:
        batch = await consumer.getmany(timeout_ms=500, max_records=10000)
        n = sum(len(v) for v in batch.values())
        for tp, msgs in batch.items():
            for m in msgs:
                out.append((m.timestamp, tp.topic, tp.partition, m.offset, m))
        # Done when every partition's position reached its fetch high-water mark (ListOffsets
        # under-reports on some brokers, so the fetch high-water is the one to trust).
        done = True
        for tp in parts:
            hw = consumer.highwater(tp)
            if hw is None or await consumer.position(tp) < hw:
                done = False
                break
        idle = idle + 1 if (n == 0 or done) else 0
        if done and n == 0:
            break
        if progress and time.monotonic() - last > 1:
            last = time.monotonic()
            print(f"rebuild: read {len(out)} records", file=sys.stderr, flush=True)
    return out


async def rebuild(
    settings: Settings,
    policy: Policy,
    *,
    batch_size: int = 5000,
    force: bool = False,
    republish: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    if not settings.database_url:
        raise GardaError("garda rebuild needs GARDA_DATABASE_URL")
    async with Database(settings.database_url, max_size=4) as db:
        async with db.pool.acquire() as conn:
            await migrate(conn)
            present = await conn.fetchval("SELECT count(*) FROM processed_events")
            if present and not force:
                raise GardaError(
                    f"the read model is not empty ({present} processed events); "
                    "rebuild into an empty database, or pass --force to clear it first"
                )
            if present:
                await conn.execute(f"TRUNCATE {', '.join(READ_MODEL_TABLES)}")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            names = [settings.topic(t) for t in topics.INPUTS]
            parts = [
                TopicPartition(n, p)
                for n in names
                for p in sorted(consumer.partitions_for_topic(n) or [])
            ]
            if not parts:
                await consumer.topics()
                parts = [
                    TopicPartition(n, p)
                    for n in names
                    for p in sorted(consumer.partitions_for_topic(n) or [])
                ]
            started = time.monotonic()
            records = await _read_all(consumer, parts, progress)
        finally:
            await consumer.stop()
        ordered = [r[-1] for r in sorted(records, key=lambda r: r[:-1])]
        processor = BatchProcessor(db, settings, policy)
        done = 0
        last = time.monotonic()
        for chunk in _chunks(ordered, batch_size):
            report = await processor.process(
                [
                    RawRecord(
                        m.topic,
                        m.partition,
                        m.offset,
                        m.key,
                        m.value,
                        list(m.headers or []),
                        m.timestamp / 1000 if m.timestamp is not None else None,
                    )
                    for m in chunk
                ]
            )
            if not republish and report.outbox_seqs:
                async with db.pool.acquire() as conn:
                    await conn.execute(
                        "UPDATE outbox SET published_at = now() WHERE seq = ANY($1)",
                        report.outbox_seqs,
                    )
            done += len(chunk)
            if progress and time.monotonic() - last > 1:
                last = time.monotonic()
                print(
                    f"rebuild: applied {done}/{len(ordered)} records", file=sys.stderr, flush=True
                )
        elapsed = time.monotonic() - started
        totals = dict(processor.totals)
    if progress:
        rate = done / elapsed if elapsed > 0 else 0
        print(
            f"rebuild: done, {done} records in {elapsed:.1f}s ({rate:.0f}/s): {totals}",
            file=sys.stderr,
        )
    log.info("rebuild finished", records=done, seconds=round(elapsed, 2), **totals)
    return {"records": done, **totals}


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
