"""Where a live event's CPU goes: the worker, PostgreSQL and the broker, and PostgreSQL's
statements.

    python -m bench.live_cost [--events 20000] [--seed 7]

The N simulated events are produced first, then one ``garda worker`` consumes them (as the
``throughput`` scenario of ``python -m bench``). From the worker's assignment to the last
processed event, the CPU time of each process tree is sampled (psutil: the worker; the
PostgreSQL server with its backends, the exited ones included; the broker) and divided by N.
The embedded PostgreSQL runs with ``pg_stat_statements``, reset at the assignment: its
statements' execution time per event is the database's share by statement (a lock's wait
counts as its time). Only the embedded stack (given servers: their CPU is not ours to read).
CPU per event is the figure to compare between runs on a shared machine; the rate is not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.common import Stack, generate, log, produce_fast
from bench.live import start_worker, wait_processed

STATEMENTS = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of ``pid`` and its descendants, the exited (waited) ones included."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


async def live_cost(stack: Stack, n: int, seed: int) -> dict[str, Any]:
    events = generate(n, seed)
    worker, url = await start_worker(stack, "cost")
    await produce_fast(stack.bootstrap, worker.settings.topic_prefix, events)
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    pg_pid = stack._pg._proc.pid if stack._pg and stack._pg._proc else None
    broker_pid = stack._broker._proc.pid if stack._broker and stack._broker._proc else None
    log(f"live cost: {n} events produced; starting the worker")
    await worker.start(ready_timeout=120)
    try:
        assert worker.proc is not None
        await conn.execute("SELECT pg_stat_statements_reset()")
        before = {
            "worker": tree_cpu(worker.proc.pid),
            "postgres": tree_cpu(pg_pid),
            "broker": tree_cpu(broker_pid),
        }
        done = await wait_processed(conn, n)
        after = {
            "worker": tree_cpu(worker.proc.pid),
            "postgres": tree_cpu(pg_pid),
            "broker": tree_cpu(broker_pid),
        }
        rows = await conn.fetch(
            "SELECT calls, rows, total_exec_time,"
            " left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS query"
            " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
            "  WHERE datname = current_database())"
            " ORDER BY total_exec_time DESC LIMIT 15"
        )
        total_ms = await conn.fetchval(
            "SELECT sum(total_exec_time) FROM pg_stat_statements WHERE dbid ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    finally:
        await conn.close()
        await worker.stop()
        await stack.drop(url)
    seconds = done - worker.assigned_at
    return {
        "events": n,
        "events_per_s": round(n / seconds),
        "cpu_us_per_event": {k: round((after[k] - before[k]) / n * 1e6, 1) for k in before},
        "statements_us_per_event": round(float(total_ms or 0) / n * 1000, 1),
        "top_statements": [
            {
                "us_per_event": round(r["total_exec_time"] / n * 1000, 1),
                "calls": r["calls"],
                "rows": r["rows"],
                "query": r["query"],
            }
            for r in rows
        ],
    }


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.live_cost", description=__doc__)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="garda-cost-"))
    stack = await Stack.start(tmp, pg_settings=STATEMENTS)
    try:
        if not stack.embedded:
            p.error("bench.live_cost measures the embedded stack only (unset GARDA_*)")
        result = await live_cost(stack, args.events, args.seed)
    finally:
        await stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    cpu = result["cpu_us_per_event"]
    print(f"{result['events']} events, {result['events_per_s']:,}/s")
    print("CPU µs per event: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    print(f"PostgreSQL statements: {result['statements_us_per_event']} µs per event, top:")
    for s in result["top_statements"]:
        print(
            f"  {s['us_per_event']:6.1f} µs  {s['calls']:5d} calls {s['rows']:7d} rows  {s['query']}"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
