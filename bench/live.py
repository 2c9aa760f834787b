"""The live worker: backlog throughput and incident -> case latency of one ``garda worker``.

- ``throughput``: the N events are produced first, then one real worker process starts;
  the clock runs from the moment ``/health`` shows its assignment (polled every 50 ms) until
  ``count(*) FROM processed_events`` reaches N (polled every 50 ms). Full rules,
  persistence and outbox; the default log level (one line per handled event).
- ``incident_latency``: with the worker idle (or while a bulk backlog is being consumed),
  ``pmi.incident.reported`` events for new workers at a steady rate, one ``send()`` each;
  end to end = produce -> the ``garda.case.opened`` record received on ``pmi.cases.v1``
  (the observer fetches with a 10 ms wait). The case is visible in the API at the commit,
  which is before the outbox publish: this is an upper bound of "visible in the API".
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.baselines import send_paced
from bench.common import Event, Stack, log, percentiles, produce_fast
from bench.profile import Profiler
from infra.worker_process import WorkerProcess
from schemas import topics

POLL = 0.05


async def _count(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM processed_events")


async def wait_processed(conn: asyncpg.Connection, n: int, stall: float = 60) -> float:
    """Poll until N processed_events rows; returns ``perf_counter()`` then."""
    last, last_change = -1, time.perf_counter()
    while True:
        count = await _count(conn)
        now = time.perf_counter()
        if count >= n:
            return now
        if count != last:
            last, last_change = count, now
        if now - last_change > stall:
            raise RuntimeError(f"garda stuck at {count}/{n} processed events")
        await asyncio.sleep(POLL)


async def start_worker(stack: Stack, scenario: str, **env: str) -> tuple[WorkerProcess, str]:
    prefix = stack.prefix(scenario)
    settings = await stack.topics(prefix, group_id=f"{prefix}garda")
    url = await stack.database(scenario)
    settings = settings.replace(database_url=url)
    worker = WorkerProcess(
        settings, stack.tmp, scenario, GARDA_DATA_DIR=str(stack.tmp / f"data-{scenario}"), **env
    )
    worker.poll_interval = POLL
    return worker, url


async def throughput(
    stack: Stack, events: list[Event], *, profile_to: str | None = None, **env: str
) -> dict[str, Any]:
    worker, url = await start_worker(stack, "live", **env)
    produce_s = await produce_fast(stack.bootstrap, worker.settings.topic_prefix, events)
    log(f"live worker: {len(events)} events produced; starting the worker")
    await worker.start(ready_timeout=120)
    conn = await asyncpg.connect(url)
    prof = Profiler(worker.proc.pid, profile_to) if profile_to and worker.proc else None
    try:
        if prof:
            prof.start()
        done = await wait_processed(conn, len(events))
        elapsed = done - worker.assigned_at
        result: dict[str, Any] = {
            "events": len(events),
            "seconds": round(elapsed, 3),
            "events_per_s": round(len(events) / elapsed),
            "produce_seconds": round(produce_s, 3),
            "startup_seconds": round(worker.startup_seconds, 2),
            "outbox_rows": await conn.fetchval("SELECT count(*) FROM outbox"),
            "deadletters": await conn.fetchval("SELECT count(*) FROM deadletters"),
            # a batch's rows share its transaction's start time: the batches it took
            "batches": await conn.fetchval(
                "SELECT count(DISTINCT processed_at) FROM processed_events"
            ),
        }
        if prof:
            result["profile"] = await asyncio.to_thread(prof.stop)
    finally:
        await conn.close()
        await worker.stop()
        await stack.drop(url)
    return result


def incidents(n: int, tag: str) -> list[Event]:
    """``n`` critical incidents, each for a new (unregistered) worker: each opens a case."""
    out: list[Event] = []
    for i in range(n):
        wid = f"PMI-LAT-{tag}-{i:06d}"
        ev = {
            "specversion": "1.0",
            "id": f"lat-{tag}-{i}",
            "source": "bench/hotline",
            "type": "pmi.incident.reported",
            "subject": wid,
            "datacontenttype": "application/json",
            "data": {
                "incident_id": f"LAT-{tag}-{i}",
                "worker_id": wid,
                "category": "trafficking",
                "occurred_at": "2026-11-28T10:00:00Z",
                "country": "MY",
                "region": "MY-01",
                "reporter_type": "hotline",
            },
        }
        out.append((topics.INCIDENTS, wid.encode(), json.dumps(ev).encode()))
    return out


async def incident_latency(
    stack: Stack,
    *,
    rate: float,
    seconds: float,
    backlog: list[Event] | None = None,
    scenario: str = "latency",
) -> dict[str, Any]:
    """Produce -> garda.case.opened observed, at ``rate``/s; optionally with ``backlog``
    (bulk events) produced just before the incidents start."""
    worker, url = await start_worker(stack, scenario)
    await worker.start(ready_timeout=120)
    settings = worker.settings
    out_topic = settings.topic(topics.CASES)
    observer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap, group_id=None, enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )  # fmt: skip
    await observer.start()
    sent: dict[bytes, float] = {}
    seen: dict[bytes, float] = {}
    result: dict[str, Any] = {"rate": rate}
    conn = await asyncpg.connect(url)
    try:
        tps = [TopicPartition(out_topic, p) for p in range(settings.partitions)]
        observer.assign(tps)
        await observer.seek_to_end(*tps)
        for tp in tps:
            await observer.position(tp)
        if backlog:
            log(f"{scenario}: producing a backlog of {len(backlog)} bulk events")
            await produce_fast(stack.bootstrap, settings.topic_prefix, backlog)
        events = incidents(max(1, int(rate * seconds)), scenario)
        log(f"{scenario}: {len(events)} incidents at {rate}/s")
        topic_of = {topics.INCIDENTS: settings.topic(topics.INCIDENTS)}
        sender = asyncio.create_task(send_paced(stack.bootstrap, topic_of, events, rate, sent))
        deadline = None
        while len(seen) < len(events):
            got = await observer.getmany(timeout_ms=50)
            now = time.time()
            for msgs in got.values():
                for m in msgs:
                    if m.key in sent and m.key not in seen and b"garda.case.opened" in m.value:
                        seen[m.key] = now - sent[m.key]
            if sender.done():
                await sender
                deadline = deadline or time.perf_counter() + (120 if backlog else 15)
                if time.perf_counter() > deadline:
                    break
        result.update(percentiles(list(seen.values())))
        result["samples_s"] = sorted(round(v, 4) for v in seen.values())
        result.update(sent=len(sent), missing=len(sent) - len(seen))
        if backlog:
            result["backlog"] = len(backlog)
            result["backlog_processed_when_done"] = await _count(conn) - len(seen)
    finally:
        await observer.stop()
        await conn.close()
        await worker.stop()
        await stack.drop(url)
    return result


def claims_backlog(n: int, tag: str = "bulk") -> list[Event]:
    """``n`` ``pmi.claim.filed`` events (the insurer's bulk feed), one claim per worker of
    ``n // 4`` workers (so several claims per worker, each worker's in order)."""
    out: list[Event] = []
    workers = max(1, n // 4)
    for i in range(n):
        wid = f"PMI-BULK-{tag}-{i % workers:07d}"
        ev = {
            "specversion": "1.0",
            "id": f"claim-{tag}-{i}",
            "source": "bpjs-ketenagakerjaan/claims",
            "type": "pmi.claim.filed",
            "subject": wid,
            "datacontenttype": "application/json",
            "data": {
                "claim_id": f"JKK-{tag}-{i:08d}",
                "worker_id": wid,
                "program": "JKK",
                "event_date": "2026-11-20",
                "filed_at": "2026-11-28T10:00:00Z",
                "benefit": "medical",
                "amount_idr": 15_000_000,
            },
        }
        out.append((topics.CLAIMS, wid.encode(), json.dumps(ev).encode()))
    return out
