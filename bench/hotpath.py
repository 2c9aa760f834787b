"""The processor's own cost per event, without Kafka: ``BatchProcessor.process`` in-process.

The N simulated events become ``RawRecord``s and are processed in batches of 1000 against a
fresh database of the stack, with logging configured as in production (JSON, info level, to
/dev/null). Reported: wall seconds and this process's CPU seconds per event (the Python
path: decode, handlers, encoding, logging, the asyncpg client side; PostgreSQL's own CPU is
in another process), with the garbage collector tuned as in the worker (``infra.gctune``).
CPU per event is the least noisy figure on a shared machine, so it is the one the hot-path
changes are judged by. ``profile_to`` writes a pyinstrument profile.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from bench.common import Event, Stack, log
from handlers.policy import load_policy
from infra.db import Database, migrate
from infra.gctune import tune_for_throughput
from infra.logging import configure_logging
from streams.processor import BatchProcessor, RawRecord

BATCH = 1000


def records(events: list[Event], prefix: str, partitions: int = 6) -> list[RawRecord]:
    from aiokafka.partitioner import DefaultPartitioner

    part = DefaultPartitioner()
    ps = list(range(partitions))
    offsets: dict[tuple[str, int], int] = {}
    out = []
    t0 = time.time()
    for i, (logical, key, value) in enumerate(events):
        p = part(key, ps, ps)
        off = offsets.get((logical, p), 0)
        offsets[(logical, p)] = off + 1
        out.append(RawRecord(prefix + logical, p, off, key, value, [], t0 + i * 1e-4))
    return out


async def hotpath(
    stack: Stack, events: list[Event], *, profile_to: str | Path | None = None
) -> dict[str, Any]:
    prefix = stack.prefix("hot")
    settings = await stack.topics(prefix)
    url = await stack.database("hotpath")
    recs = records(events, prefix, settings.partitions)
    sink = open(os.devnull, "w")
    with contextlib.redirect_stderr(sink):  # the handler binds sys.stderr when configured
        configure_logging("json", "info")
    prof = None
    async with Database(url, max_size=2) as db:
        async with db.pool.acquire() as conn:
            await migrate(conn)

        processor = BatchProcessor(db, settings.replace(database_url=url), load_policy())
        await processor.process(recs[:BATCH])  # warm-up (connections, prepared statements)
        rest = recs[BATCH:]
        tune_for_throughput()  # as the worker does before it runs
        log(f"hotpath: {len(rest)} events through BatchProcessor in batches of {BATCH}")
        if profile_to:
            import pyinstrument

            prof = pyinstrument.Profiler(async_mode="disabled", interval=0.0005)
            prof.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(0, len(rest), BATCH):
            await processor.process(rest[i : i + BATCH])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if prof is not None:
            prof.stop()
            Path(profile_to).write_text(prof.output_text(unicode=False, color=False))  # type: ignore[arg-type]
        totals = dict(processor.totals)
    await stack.drop(url)
    n = len(rest)
    return {
        "events": n,
        "seconds": round(wall, 3),
        "events_per_s": round(n / wall),
        "cpu_us_per_event": round(cpu / n * 1e6, 1),
        "outcomes": totals,
    }
