"""The read model at national scale: the desk queue over HTTP, the deadline scan, worker RSS.

Each scenario gets a fresh database loaded by ``COPY`` before a real ``garda worker`` starts
on it (going through Kafka would take an hour for a million workers):

- ``desk_queue``: ``workers`` worker rows (``copy_workers``) and ``cases`` cases
  (``bench.desk_cases``: 20 posts, busy ones weighted, 75 % not resolved, some escalated).
  Then ``GET /api/cases?order=urgency&status=open,acknowledged,reopened&limit=50`` through
  the worker's HTTP API with a post's bearer token (a busy consulate, a quiet embassy, a
  head of mission with the consulates' escalations, headquarters), ``repeat`` times each
  after 20 warm-up requests, one keep-alive connection, requests one after the other, each
  followed by a ``GET /health`` (the HTTP floor at the same moments); and
  the same statement without HTTP (``infra.queries.list_cases_sql`` on one asyncpg
  connection), with its ``EXPLAIN (ANALYZE, BUFFERS)`` plan.
- ``rss``: the worker's resident memory (its process tree, psutil) right after it joined,
  then after each of two rounds of ``events`` simulated events (``infra.simulate.traffic``:
  ~45 % of them departures of new workers, so each round brings thousands of workers the
  process has never seen), for a small read model (``small`` workers) and the big one.
  Flat means: the big read model's figure ÷ the small one's ≈ 1, and the second round
  adds about nothing over the first (no per-worker cache growing without bound).
- ``deadline_scan``: ``open_cases`` open cases whose deadlines lie hours ahead, each with the
  partition of its worker (murmur2, as the producers key them), so they are in every timer
  tick's scan range: the tick's statement (``streams.timers``) timed and explained, and the
  escalation run of ``bench.escalation`` on top of them (``preload``).

Benchmarks, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import psutil
from aiokafka.partitioner import DefaultPartitioner

from bench.common import Stack, generate, log, percentiles, produce_fast
from bench.desk_cases import copy_cases, synthetic_cases
from bench.desk_paging import FILTERS, explain, plan_nodes, walk
from bench.live import start_worker, wait_processed
from handlers.access import Scope, case_filter
from handlers.model import Worker
from handlers.policy import Policy, load_policy
from infra import queries
from infra.bulk import WORKER_COLUMNS
from infra.db import migrate
from infra.store import CASE_COLUMNS, case_row
from infra.tokens import create_token, hash_token
from infra.worker_process import WorkerProcess
from streams.timers import DUE_CASES_SQL, NEXT_DUE_SQL

QUEUE_PATH = "/api/cases?order=urgency&status=open,acknowledged,reopened&limit=50"
# label -> (posts of the token, hq)
TOKENS: dict[str, tuple[list[str], bool]] = {
    "post KJRI-JOHOR-BAHRU": (["KJRI-JOHOR-BAHRU"], False),
    "post KBRI-BANDAR-SERI-BEGAWAN": (["KBRI-BANDAR-SERI-BEGAWAN"], False),
    "post KBRI-KUALA-LUMPUR": (["KBRI-KUALA-LUMPUR"], False),
    "headquarters": ([], True),
}
# The timer's scan before it read per partition (streams.timers): the baseline of the same run.
ANY_NEXT_DUE = (
    "SELECT least("
    "(SELECT min(next_due) FROM cases WHERE partition = ANY($1) AND next_due > $2),"
    " (SELECT min(stall_due) FROM claims WHERE partition = ANY($1) AND stall_due > $2))"
)
ANY_DUE_CASES = (
    "SELECT doc FROM cases WHERE partition = ANY($1) AND next_due <= $2"
    " ORDER BY next_due LIMIT 5000"
)
CHUNK = 100_000


def partition_of(key: str, partitions: int) -> int:
    parts = list(range(partitions))
    return int(DefaultPartitioner()(key.encode(), parts, parts))


class IndexesDeferred:
    """``async with IndexesDeferred(conn, "cases"):`` drops the table's secondary indexes and
    creates them again (as ``pg_indexes`` defines them) on the way out: a bulk ``COPY``
    then builds each index once, sorted, instead of inserting into ten of them per row."""

    def __init__(self, conn: asyncpg.Connection, table: str) -> None:
        self.conn, self.table = conn, table
        self.defs: list[tuple[str, str]] = []

    async def __aenter__(self) -> IndexesDeferred:
        rows = await self.conn.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i"
            " JOIN pg_class c ON c.relname = i.indexname"
            " JOIN pg_index x ON x.indexrelid = c.oid"
            " WHERE i.schemaname = 'public' AND i.tablename = $1 AND NOT x.indisprimary",
            self.table,
        )
        self.defs = [(r["indexname"], r["indexdef"]) for r in rows]
        for name, _ in self.defs:
            await self.conn.execute(f'DROP INDEX "{name}"')
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _, ddl in self.defs:
            await self.conn.execute(ddl)
        await self.conn.execute(f"ANALYZE {self.table}")


async def copy_workers(conn: asyncpg.Connection, n: int, partitions: int, seed: int = 7) -> int:
    """``n`` placed workers (``PMI-S<8 digits>``) into ``workers`` by ``COPY``; a document
    built once and its worker id substituted, so a million take seconds, not minutes.
    ``workers.partition`` is left empty: no query reads it, and murmur2 in Python costs
    ~18 s a million."""
    rnd = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    countries = [("MY", "MY-01"), ("TW", None), ("HK", None), ("SA", "SA-01"), ("SG", None)]
    templates = {}
    for country, region in countries:
        w = Worker(
            worker_id="@@ID@@",
            state="placed",
            country=country,
            region=region,
            departed_at=now - timedelta(days=90),
            arrived_at=now - timedelta(days=89),
            contract_start=now - timedelta(days=89),
            contract_end=now + timedelta(days=641),
            scheme="p2p",
            employer_type="household",
            has_social_security=True,
            first_seen_via="pmi.worker.departed",
            updated_at=now,
            state_at=now - timedelta(days=89),
        )
        templates[country] = (region, json.dumps(w.to_doc()))
    done = 0
    while done < n:
        records = []
        for i in range(done, min(n, done + CHUNK)):
            wid = f"PMI-S{i:08d}"
            country = countries[rnd.randrange(len(countries))][0]
            region, doc = templates[country]
            records.append(
                (
                    wid,
                    "placed",
                    country,
                    region,
                    False,
                    False,
                    None,
                    None,
                    doc.replace("@@ID@@", wid),
                )
            )
        await conn.copy_records_to_table(
            "workers", records=records, columns=list(WORKER_COLUMNS), schema_name="public"
        )
        done += len(records)
    await conn.execute("ANALYZE workers")
    return done


async def copy_open_cases(
    conn: asyncpg.Connection, n: int, policy: Policy, partitions: int, seed: int = 9
) -> int:
    """``n`` open (not acknowledged) cases, opened just now, so their ack deadlines lie
    hours ahead under the shipped policy; each with its worker's partition (the timer's
    scan range) and ``next_due`` the deadline."""
    cases = synthetic_cases(n, policy, seed=seed)
    now = datetime.now(UTC)
    records = []
    for c in cases:
        c.status, c.acknowledged_at, c.resolved_at, c.escalation_level = "open", None, None, 0
        c.detail, c.escalated_to = {}, None
        c.case_id = c.case_id.replace("CASE-B", "CASE-T")
        c.opened_at = now - timedelta(minutes=random.Random(c.case_id).randrange(0, 30))
        sla = policy.sla[c.severity]
        c.ack_due, c.resolve_due = c.opened_at + sla.ack, c.opened_at + sla.resolve
        row = case_row(c, c.ack_due, partition_of(c.worker_id, partitions), json.dumps(c.to_doc()))
        records.append(row)
    for i in range(0, len(records), CHUNK):
        await conn.copy_records_to_table(
            "cases",
            records=records[i : i + CHUNK],
            columns=list(CASE_COLUMNS),
            schema_name="public",
        )
    await conn.execute("ANALYZE cases")
    return len(records)


async def _json_codecs(conn: asyncpg.Connection) -> None:
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def plan_summary(plan: dict[str, Any]) -> dict[str, Any]:
    nodes = plan_nodes(plan["Plan"])
    return {
        "plan": nodes,
        "seq_scan_on_cases": any(x.startswith("Seq Scan on cases") for x in nodes),
        "rows_removed_by_filter": sum(
            x.get("Rows Removed by Filter", 0) for x in walk(plan["Plan"])
        ),
        "shared_hit_blocks": plan["Plan"].get("Shared Hit Blocks"),
        "execution_ms": plan.get("Execution Time"),
    }


async def time_statement(
    conn: asyncpg.Connection, sql: str, args: list[Any], repeat: int
) -> dict[str, Any]:
    for _ in range(20):  # warm the cache and the plan
        await conn.fetch(sql, *args)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await conn.fetch(sql, *args)
        times.append(time.perf_counter() - t)
    return percentiles(times)


def rss_mb(pid: int) -> float:
    """Resident memory of the process and its children, MB."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
        total = 0
        for q in procs:
            try:
                total += q.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return round(total / 2**20, 1)
    except psutil.NoSuchProcess:
        return 0.0


async def _process_rounds(
    stack: Stack,
    worker: WorkerProcess,
    conn: asyncpg.Connection,
    events: int,
    seed: int,
    rounds: int = 2,
) -> list[dict[str, Any]]:
    """``rounds`` rounds of ``events`` simulated events (new workers each); RSS after each."""
    assert worker.proc is not None
    out = []
    total = await conn.fetchval("SELECT count(*) FROM processed_events")
    for r in range(rounds):
        batch = generate(events, seed + 100 * r)
        wids = {k for _, k, _ in batch}
        await produce_fast(stack.bootstrap, worker.settings.topic_prefix, batch)
        total += len(batch)
        t0 = time.perf_counter()
        await wait_processed(conn, total)
        await asyncio.sleep(2.0)  # the outbox publish and the timer's next ticks
        out.append(
            {
                "events": len(batch),
                "distinct_workers": len(wids),
                "seconds": round(time.perf_counter() - t0, 2),
                "rss_mb": rss_mb(worker.proc.pid),
            }
        )
        log(f"  round {r + 1}: {len(batch)} events, {len(wids)} workers, {out[-1]['rss_mb']} MB")
    return out


async def read_model(
    stack: Stack,
    *,
    workers: int,
    cases: int,
    events: int,
    repeat: int,
    scenario: str,
    seed: int = 7,
    rounds: int = 2,
) -> dict[str, Any]:
    """A worker on a read model of ``workers`` workers and ``cases`` cases: RSS before and
    after two rounds of events; with ``repeat`` > 0 also the desk queue over HTTP and SQL."""
    policy = load_policy()
    worker, url = await start_worker(stack, scenario)
    partitions = worker.settings.partitions
    result: dict[str, Any] = {"workers": workers, "cases": cases}
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        t0 = time.perf_counter()
        async with IndexesDeferred(conn, "workers"):
            await copy_workers(conn, workers, partitions, seed)
        made = synthetic_cases(cases, policy, seed=seed)
        async with IndexesDeferred(conn, "cases"):
            await copy_cases(conn, made)
        result["copy_seconds"] = round(time.perf_counter() - t0, 1)
        log(f"{scenario}: {workers:,} workers, {cases:,} cases copied in {result['copy_seconds']}s")
        tokens = {}
        for label, (posts, hq) in TOKENS.items():
            tokens[label] = (await create_token(conn, posts=posts, hq=hq, label="bench"))[1]
        await worker.start(ready_timeout=180)
        assert worker.proc is not None
        result["startup_seconds"] = round(worker.startup_seconds, 2)
        await asyncio.sleep(2.0)
        result["rss_idle_mb"] = rss_mb(worker.proc.pid)
        log(f"{scenario}: worker up in {result['startup_seconds']}s, {result['rss_idle_mb']} MB")
        if repeat:
            result["queue"] = await desk_queue(worker, url, tokens, policy, repeat)
            result["health"] = result["queue"].pop("health")
        result["rounds"] = await _process_rounds(stack, worker, conn, events, seed, rounds)
        result["rss_after_mb"] = result["rounds"][-1]["rss_mb"]
    finally:
        await conn.close()
        await worker.stop()
        await stack.drop(url)
    return result


async def desk_queue(
    worker: WorkerProcess, url: str, tokens: dict[str, str], policy: Policy, repeat: int
) -> dict[str, Any]:
    """The first page of the desk queue per token: HTTP p50/p99, SQL-only p50/p99, plan."""
    out: dict[str, Any] = {}
    health_times: list[float] = []
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1, init=_json_codecs)
    assert pool is not None
    try:
        async with pool.acquire() as pconn, aiohttp.ClientSession() as http:
            for label, token in tokens.items():
                posts, hq = TOKENS[label]
                scope = Scope("bench", frozenset(posts), hq)
                # the worker's own statement (a known token re-checked, documents as text)
                sql, args = queries.list_cases_sql(
                    FILTERS,
                    visible=case_filter(scope, policy),
                    limit=50,
                    order="urgency",
                    active_token=hash_token(token),
                    as_text=True,
                )
                sql_times = await time_statement(pconn, sql, args, repeat)
                plan = plan_summary(await explain(pconn, sql, args))
                headers = {"Authorization": f"Bearer {token}"}
                times, floor = [], []
                count = None
                for i in range(20 + repeat):
                    t = time.perf_counter()
                    async with http.get(worker.url + QUEUE_PATH, headers=headers) as r:
                        body = await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"{label}: HTTP {r.status} {body[:200]!r}")
                    t2 = time.perf_counter()
                    # the HTTP floor at the same moments: /health (no token, one small
                    # query) right after each page, so both see the same machine load
                    async with http.get(worker.url + "/health") as r:
                        await r.read()
                    if i >= 20:
                        times.append(t2 - t)
                        floor.append(time.perf_counter() - t2)
                    count = json.loads(body)["count"]
                health_times += floor
                out[label] = {
                    "http": percentiles(times),
                    "health": percentiles(floor),
                    "sql": sql_times,
                    "page_size": count,
                    **plan,
                }
                log(
                    f"  {label}: HTTP p99 {out[label]['http']['p99_ms']} ms, SQL p99"
                    f" {sql_times['p99_ms']} ms, /health between them p99"
                    f" {out[label]['health']['p99_ms']} ms,"
                    f" {plan['rows_removed_by_filter']} rows filtered; {plan['plan'][:3]}"
                )
            out["health"] = {"http": percentiles(health_times)}
            log(f"  GET /health: HTTP p99 {out['health']['http']['p99_ms']} ms")
    finally:
        await pool.close()
    return out


async def rss_and_queue(
    stack: Stack, *, workers: int, small: int, cases: int, events: int, repeat: int
) -> dict[str, Any]:
    """The small read model (``small`` workers, cases in proportion), then the big one."""
    small_cases = max(100, cases * small // workers)
    res = {
        "small": await read_model(
            stack, workers=small, cases=small_cases, events=events, repeat=0, scenario="rss-small"
        ),
        "big": await read_model(
            stack, workers=workers, cases=cases, events=events, repeat=repeat, scenario="rss-big"
        ),
    }
    s, b = res["small"], res["big"]
    res["rss_ratio_idle"] = round(b["rss_idle_mb"] / s["rss_idle_mb"], 3)
    res["rss_ratio_after"] = round(b["rss_after_mb"] / s["rss_after_mb"], 3)
    res["second_round_growth_mb"] = round(b["rounds"][1]["rss_mb"] - b["rounds"][0]["rss_mb"], 1)
    return res


async def deadline_scan(url: str, partitions: int, repeat: int) -> dict[str, Any]:
    """The timer scan's two case statements (``streams.timers``: the earliest upcoming
    deadline, the due cases) over every partition at ``now``: timed and explained, and the
    same two in their former ``partition = ANY($1)`` form (the baseline)."""
    conn = await asyncpg.connect(url)
    try:
        args = [list(range(partitions)), datetime.now(UTC)]
        in_flight: list[str] = []  # the full scan's cases with a command in flight: none
        out: dict[str, Any] = {
            "open_cases": await conn.fetchval(
                "SELECT count(*) FROM cases WHERE status <> 'resolved'"
            )
        }
        for label, sql, extra in (
            ("next_due", NEXT_DUE_SQL, []),
            ("due_cases", DUE_CASES_SQL, [in_flight]),
            ("any_next_due", ANY_NEXT_DUE, []),
            ("any_due_cases", ANY_DUE_CASES, []),
        ):
            out[label] = {
                "statement": await time_statement(conn, sql, args + extra, repeat),
                **plan_summary(await explain(conn, sql, args + extra)),
            }
        out["scan_p99_ms"] = round(
            out["next_due"]["statement"]["p99_ms"] + out["due_cases"]["statement"]["p99_ms"], 1
        )
        out["any_scan_p99_ms"] = round(
            out["any_next_due"]["statement"]["p99_ms"]
            + out["any_due_cases"]["statement"]["p99_ms"],
            1,
        )
        return out
    finally:
        await conn.close()


async def main_async(args: Any) -> dict[str, Any]:  # python -m bench.scale
    import shutil
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="garda-scale-"))
    stack = await Stack.start(tmp)
    try:
        return await rss_and_queue(
            stack,
            workers=args.workers,
            small=args.small,
            cases=args.cases,
            events=args.events,
            repeat=args.repeat,
        )
    finally:
        await stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    p.add_argument("--workers", type=int, default=1_000_000)
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--cases", type=int, default=200_000)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=300)
    print(json.dumps(asyncio.run(main_async(p.parse_args())), indent=2))
