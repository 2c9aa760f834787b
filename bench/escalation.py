"""How late escalations fire: missed deadline -> ``garda.case.escalated`` on pmi.cases.v1.

One real ``garda worker`` (default timer interval, 1 s) with the shipped policy whose
``[sla.*]`` clocks are shortened to seconds (critical: ack 3 s -> level 1, 6 s -> level 2).
``cases`` critical incidents are published spread over ``spread`` seconds, so their
deadlines fall at every phase of the timer; every escalation (two per case) is timed from
its missed deadline (``event.missed_deadline`` in the event):

- ``handled``: the escalated event's CloudEvents ``time`` (the processor's clock in the batch
  that applied the deadline command);
- ``observed``: a consumer (fetch_max_wait_ms=10) received it (after the outbox publish).

The timer interval sets most of it (a deadline waits for the next tick: 0..interval).

With ``backlog`` (bulk ``pmi.claim.filed`` events), the backlog is produced just before the
incidents, so the escalations fall due while the worker consumes it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import Event, Stack, log, percentiles, produce_fast
from bench.live import incidents, start_worker
from bench.scale import IndexesDeferred, copy_open_cases, deadline_scan
from handlers.policy import load_policy
from infra.db import migrate
from schemas import topics
from schemas.fields import parse_dt

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "handlers" / "default_policy.toml"
FAST_SLA = {  # severity -> (ack, level2, resolve) in seconds
    "critical": (3, 6, 12),
    "high": (4, 8, 14),
    "medium": (5, 10, 16),
    "low": (6, None, 18),
}


def fast_sla_policy(out: Path) -> Path:
    """The shipped policy with every ``[sla.<severity>]`` clock shortened to seconds."""
    text = DEFAULT_POLICY.read_text()
    for sev, (ack, level2, resolve) in FAST_SLA.items():
        m = re.search(rf"^\[sla\.{sev}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
        if m is None:
            raise ValueError(f"no [sla.{sev}] in {DEFAULT_POLICY}")
        block = m.group(1)
        block = re.sub(r'^ack = ".*"', f'ack = "{ack}s"', block, flags=re.M)
        block = re.sub(r'^resolve = ".*"', f'resolve = "{resolve}s"', block, flags=re.M)
        if level2:
            block = re.sub(r'^level2 = ".*"', f'level2 = "{level2}s"', block, flags=re.M)
        text = text[: m.start(1)] + block + text[m.end(1) :]
    out.write_text(text)
    return out


async def escalation_lateness(
    stack: Stack,
    *,
    cases: int,
    spread: float,
    preload: int = 0,
    backlog: list[Event] | None = None,
    scenario: str = "escalation",
) -> dict[str, Any]:
    """``preload``: that many open cases (deadlines hours ahead, under the shipped policy)
    are COPYed into the read model before the worker starts (``bench.scale``), so every
    timer tick scans past them; the tick's statement is then timed and explained too.
    ``backlog``: bulk events produced just before the incidents, so the escalations fall
    due while the worker consumes them."""
    policy = fast_sla_policy(stack.tmp / "fast_sla.toml")
    worker, url = await start_worker(stack, scenario, GARDA_POLICY=str(policy))
    settings = worker.settings
    scan: dict[str, Any] = {}
    if preload:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            t0 = time.perf_counter()
            async with IndexesDeferred(conn, "cases"):
                await copy_open_cases(conn, preload, load_policy(), settings.partitions)
            log(f"{scenario}: {preload:,} open cases copied in {time.perf_counter() - t0:.1f}s")
        finally:
            await conn.close()
    await worker.start(ready_timeout=180)
    if preload:
        scan = await deadline_scan(url, settings.partitions, 200)
        log(
            f"{scenario}: the timer's scan p99 {scan['scan_p99_ms']} ms over"
            f" {scan['open_cases']:,} open cases (the former ANY form:"
            f" {scan['any_scan_p99_ms']} ms)"
        )
    consumer = AIOKafkaConsumer(
        settings.topic(topics.CASES),
        bootstrap_servers=stack.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=0)
    await producer.start()
    handled: list[float] = []
    observed: list[float] = []
    per_level = {1: 0, 2: 0}
    try:
        if backlog:
            log(f"{scenario}: producing a backlog of {len(backlog)} bulk events")
            await produce_fast(stack.bootstrap, settings.topic_prefix, backlog)
        log(f"{scenario}: {cases} critical incidents over {spread} s, 2 escalations each")
        for _, key, value in incidents(cases, scenario):
            await producer.send_and_wait(settings.topic(topics.INCIDENTS), value=value, key=key)
            await asyncio.sleep(spread / cases)
        deadline = time.monotonic() + 30 + spread
        while len(observed) < 2 * cases and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            seen = datetime.now(UTC)
            for msgs in batch.values():
                for m in msgs:
                    ev = json.loads(m.value)
                    if ev["type"] != "garda.case.escalated":
                        continue
                    step = ev["data"]["event"]
                    missed = parse_dt(step["missed_deadline"])
                    per_level[step["level"]] = per_level.get(step["level"], 0) + 1
                    handled.append((parse_dt(ev["time"]) - missed).total_seconds())
                    observed.append((seen - missed).total_seconds())
    finally:
        await producer.stop()
        await consumer.stop()
        await worker.stop()
        await stack.drop(url)
    return {
        "cases": cases,
        "preloaded_open_cases": preload,
        **({"backlog": len(backlog)} if backlog else {}),
        "startup_seconds": round(worker.startup_seconds, 2),
        "timer_scan": scan,
        "expected": 2 * cases,
        "escalations": len(observed),
        "per_level": per_level,
        "timer_interval_s": settings.timer_interval,
        "handled": percentiles(handled),
        "observed": percentiles(observed),
        "samples_s": [round(v, 4) for v in sorted(observed)],
    }
