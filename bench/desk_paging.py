"""The desk queue's first page at scale: ``python -m bench.desk_paging [--sizes 5000,50000]``.

For each size, a fresh database on a temporary PostgreSQL (``durable=False``; or next to
``GARDA_DATABASE_URL``) gets that many cases by ``COPY`` (``bench.desk_cases``), then the
exact statement ``GET /api/cases?order=urgency&status=open,acknowledged,reopened&limit=50``
runs (``infra.queries.list_cases_sql``) for one consulate's token (KJRI Johor Bahru), a head
of mission's (KBRI Kuala Lumpur: its own cases and the consulates' escalated to it) and
headquarters. Reported per scope: p50/p99 of the first page over ``--repeat`` runs (the
statement only, on one connection: no HTTP), the plan's top nodes and whether it scans
``cases`` sequentially. Then every page of the consulate's queue is read once to check
that each case comes exactly once and in order. A benchmark: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import log, percentiles
from bench.desk_cases import copy_cases, synthetic_cases
from handlers.access import Scope, case_filter
from handlers.policy import load_policy
from infra import queries
from infra.db import migrate
from infra.postgres import EmbeddedPostgres, create_database, drop_database

FILTERS = {"status": "open,acknowledged,reopened"}
SCOPES = {
    "post KJRI-JOHOR-BAHRU": Scope("bench", frozenset({"KJRI-JOHOR-BAHRU"}), False),
    "post KBRI-KUALA-LUMPUR": Scope("bench", frozenset({"KBRI-KUALA-LUMPUR"}), False),
    "post KBRI-BANDAR-SERI-BEGAWAN": Scope("bench", frozenset({"KBRI-BANDAR-SERI-BEGAWAN"}), False),
    "headquarters": Scope("bench", frozenset(), True),
}


def plan_nodes(plan: dict[str, Any]) -> list[str]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan as 'Node Type [on relation using index]'."""
    out = []
    stack = [plan]
    while stack:
        node = stack.pop(0)
        text = node["Node Type"]
        if node.get("Relation Name"):
            text += f" on {node['Relation Name']}"
        if node.get("Index Name"):
            text += f" using {node['Index Name']}"
        out.append(text)
        stack[:0] = node.get("Plans", [])
    return out


def walk(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan] + [n for child in plan.get("Plans", []) for n in walk(child)]


async def _json_codecs(conn: asyncpg.Connection) -> None:
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def explain(conn: asyncpg.Connection, sql: str, args: list[Any]) -> dict[str, Any]:
    raw = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args)
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]


async def page_through(conn: asyncpg.Connection, scope: Scope, policy: Any, limit: int) -> dict:
    """Read every page of the scope's queue; checks each case comes once and in order."""
    visible = case_filter(scope, policy)
    seen: list[dict[str, Any]] = []
    after = None
    pages = 0
    while True:
        page = await queries.list_cases(
            conn, FILTERS, visible=visible, limit=limit, after=after, order="urgency"
        )
        pages += 1
        seen += page
        if len(page) < limit:
            break
        after = queries.page_cursor(page[-1], "urgency")
    keys = [(queries.desk_due(c) or "~", c["case_id"]) for c in seen]
    ids = [c["case_id"] for c in seen]
    return {
        "pages": pages,
        "cases": len(ids),
        "unique": len(set(ids)) == len(ids),
        "ordered": keys == sorted(keys),
    }


async def run_size(server_url: str, n: int, repeat: int, policy: Any) -> dict[str, Any]:
    name = f"desk_{n}_{uuid.uuid4().hex[:6]}"
    url = await create_database(server_url, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            t0 = time.perf_counter()
            await copy_cases(conn, synthetic_cases(n, policy))
            load = time.perf_counter() - t0
            log(f"{n} cases copied in {load:.1f}s")
            result: dict[str, Any] = {"cases": n, "copy_seconds": round(load, 2), "scopes": {}}
            pool = await asyncpg.create_pool(url, min_size=1, max_size=1, init=_json_codecs)
            assert pool is not None
            try:
                async with pool.acquire() as pconn:
                    for label, scope in SCOPES.items():
                        sql, args = queries.list_cases_sql(
                            FILTERS, visible=case_filter(scope, policy), limit=50, order="urgency"
                        )
                        for _ in range(20):  # warm the cache and the plan
                            await pconn.fetch(sql, *args)
                        times = []
                        for _ in range(repeat):
                            t = time.perf_counter()
                            await pconn.fetch(sql, *args)
                            times.append(time.perf_counter() - t)
                        plan = await explain(pconn, sql, args)
                        nodes = plan_nodes(plan["Plan"])
                        matching = await pconn.fetchval(
                            f"SELECT count(*) FROM ({sql.replace('SELECT doc', 'SELECT 1', 1)}) q",
                            *args[:-1],
                            10**9,
                        )
                        result["scopes"][label] = {
                            "first_page": percentiles(times),
                            "queue_size": matching,
                            "plan": nodes,
                            "seq_scan_on_cases": any(
                                x.startswith("Seq Scan on cases") for x in nodes
                            ),
                            "rows_removed_by_filter": sum(
                                x.get("Rows Removed by Filter", 0) for x in walk(plan["Plan"])
                            ),
                            "shared_hit_blocks": plan["Plan"].get("Shared Hit Blocks"),
                        }
                        log(
                            f"{n} cases, {label}: first page p50"
                            f" {result['scopes'][label]['first_page']['p50_ms']} ms, p99"
                            f" {result['scopes'][label]['first_page']['p99_ms']} ms; {nodes[:4]}"
                        )
                    johor = SCOPES["post KJRI-JOHOR-BAHRU"]
                    result["paging_check"] = await page_through(pconn, johor, policy, 50)
            finally:
                await pool.close()
        finally:
            await conn.close()
    finally:
        await drop_database(server_url, name)
    return result


async def main_async(sizes: list[int], repeat: int) -> dict[str, Any]:
    policy = load_policy()
    given = os.environ.get("GARDA_DATABASE_URL")
    if given:
        return {"sizes": [await run_size(given, n, repeat, policy) for n in sizes]}
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(temporary=True, durable=False, log_path=Path(tmp) / "pg.log")
        await pg.start()
        try:
            return {"sizes": [await run_size(pg.url, n, repeat, policy) for n in sizes]}
        finally:
            await pg.stop()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.desk_paging", description=__doc__)
    p.add_argument("--sizes", default="5000,50000", help="comma-separated case counts")
    p.add_argument("--repeat", type=int, default=500, help="timed runs of each first page")
    p.add_argument("--output", type=Path, help="write the JSON result here too")
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    result = asyncio.run(main_async(sizes, args.repeat))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
