"""The baselines every Garda figure is divided by, on the same events and topics.

- ``raw``: an aiokafka group consumer, ``getmany(max_records=10000)``, ``json.loads`` of
  every value (fetch_max_wait_ms=100, as Garda's consumer).
- ``ceiling``: the same, plus, per fetched batch, the equivalent rows COPYed into PostgreSQL
  in one transaction (a processed-id row with a primary key and a JSON document row per
  event) and the offsets committed after it: the floor any pipeline with the same
  guarantees pays for the broker and the database.
- ``peer`` (``bench.faust_peer``): a plain Faust agent that only decodes, in its own process.
- ``round_trip``: produce -> a raw group consumer has the record, at a steady rate.

Every throughput clock starts when the group assignment is seen (the join is excluded) and
the events were produced before (a backlog).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import REPO, Event, input_topics, log, percentiles

CEILING_TABLES = """
CREATE TABLE IF NOT EXISTS bench_processed (
    source text NOT NULL, id text NOT NULL, type text NOT NULL, worker_id text,
    topic text, partition integer, "offset" bigint, PRIMARY KEY (source, id));
CREATE TABLE IF NOT EXISTS bench_docs (worker_id text, type text, doc jsonb);
"""


def raw_consumer(
    bootstrap: str, names: list[str], group: str, fetch_wait_ms: int = 100
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *names,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        rebalance_timeout_ms=10_000,
        fetch_max_wait_ms=fetch_wait_ms,
        max_partition_fetch_bytes=8 << 20,
    )


async def _assigned(consumer: AIOKafkaConsumer, timeout: float = 120) -> float:
    t = time.perf_counter()
    while not consumer.assignment():
        if time.perf_counter() - t > timeout:
            raise RuntimeError(f"no assignment in {timeout} s")
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def consume(bootstrap: str, prefix: str, n: int, pg_url: str | None = None) -> dict[str, Any]:
    """``raw`` (no ``pg_url``) or ``ceiling`` over a backlog of ``n`` events."""
    conn = None
    if pg_url:
        conn = await asyncpg.connect(pg_url)
        await conn.execute(CEILING_TABLES)
    consumer = raw_consumer(bootstrap, input_topics(prefix), f"{prefix}raw{int(bool(pg_url))}")
    await consumer.start()
    count = batches = 0
    try:
        t0 = await _assigned(consumer)
        while count < n:
            got = await consumer.getmany(timeout_ms=100, max_records=10_000)
            if not got:
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError(f"raw consumer stuck at {count}/{n}")
                continue
            batches += 1
            processed: list[tuple] = []
            docs: list[tuple] = []
            for msgs in got.values():
                for m in msgs:
                    ev = json.loads(m.value)
                    if conn is not None:
                        sub = ev.get("subject")
                        processed.append(
                            (
                                ev["source"],
                                ev["id"],
                                ev["type"],
                                sub,
                                m.topic,
                                m.partition,
                                m.offset,
                            )
                        )
                        docs.append((sub, ev["type"], json.dumps(ev["data"])))
                count += len(msgs)
            if conn is not None:
                async with conn.transaction():
                    await conn.copy_records_to_table("bench_processed", records=processed)
                    await conn.copy_records_to_table("bench_docs", records=docs)
                await consumer.commit()
        elapsed = time.perf_counter() - t0
    finally:
        await consumer.stop()
        if conn is not None:
            await conn.close()
    return {
        "events": count,
        "seconds": round(elapsed, 3),
        "events_per_s": round(count / elapsed),
        "batches": batches,
    }


async def faust_peer(bootstrap: str, prefix: str, n: int, timeout: float = 180) -> dict[str, Any]:
    """The plain Faust decode-only agent (``bench.faust_peer``) in its own process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.faust_peer",
        bootstrap,
        prefix,
        str(n),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("faust peer did not finish") from None
    if proc.returncode != 0:
        raise RuntimeError(f"faust peer failed: {err.decode(errors='replace')[-2000:]}")
    lines = [x for x in out.decode(errors="replace").splitlines() if "RESULT " in x]
    if not lines:
        raise RuntimeError(f"faust peer printed no result: {err.decode(errors='replace')[-2000:]}")
    return json.loads(lines[-1].split("RESULT ", 1)[1])


async def send_paced(
    bootstrap: str,
    topic_of: dict[str, str],
    events: list[Event],
    rate: float,
    sent: dict[bytes, float],
) -> None:
    """One ``send()`` per event (linger 0) at ``rate`` per second; ``sent[key]`` = wall time."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, enable_idempotence=False
    )
    await producer.start()
    try:
        futures = []
        start = time.perf_counter()
        for i, (logical, key, value) in enumerate(events):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[key] = time.time()
            futures.append(await producer.send(topic_of[logical], value=value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def round_trip(bootstrap: str, prefix: str, events: list[Event], rate: float) -> dict:
    """Produce -> a raw group consumer (fetch wait 100 ms) decoded the record."""
    consumer = raw_consumer(bootstrap, input_topics(prefix), f"{prefix}rt")
    await consumer.start()
    sent: dict[bytes, float] = {}
    seen: dict[bytes, float] = {}
    try:
        await _assigned(consumer)
        for tp in consumer.assignment():
            await consumer.position(tp)
        log(f"round trip: {len(events)} events at {rate}/s to a raw consumer")
        topic_of = {e[0]: prefix + e[0] for e in events}
        sender = asyncio.create_task(send_paced(bootstrap, topic_of, events, rate, sent))
        deadline = None
        while len(seen) < len(events):
            got = await consumer.getmany(timeout_ms=50, max_records=10_000)
            for msgs in got.values():
                for m in msgs:
                    json.loads(m.value)
                    if m.key in sent and m.key not in seen:
                        seen[m.key] = time.time() - sent[m.key]
            if sender.done():
                await sender
                deadline = deadline or time.perf_counter() + 15
                if time.perf_counter() > deadline:
                    break
    finally:
        await consumer.stop()
    return {
        **percentiles(list(seen.values())),
        "sent": len(sent),
        "missing": len(sent) - len(seen),
        "samples_s": sorted(round(v, 4) for v in seen.values()),
    }
