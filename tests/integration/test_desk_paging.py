"""The desk queue with thousands of cases, against a real worker and database: 3,000 cases
are loaded with ``COPY`` (``bench.desk_cases``), then the urgency-ordered keyset paging of
``GET /api/cases`` returns every visible case exactly once, in order, for a post's desk
session and for headquarters; and the first page of one post is read through an index
(``EXPLAIN``: no sequential scan of ``cases``), for a busy post and for one with few cases.
Timings are in ``python -m bench.desk_paging`` (a benchmark, not a test)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from bench.desk_cases import copy_cases, synthetic_cases
from bench.desk_paging import plan_nodes
from handlers.access import Scope, can_see_case, case_filter
from handlers.policy import load_policy
from infra import queries
from infra.settings import Settings
from tests.integration.desk_support import JOHOR, DeskClient
from tests.integration.harness import WorkerProcess, new_token

N = 3000
FEW = "KBRI-BANDAR-SERI-BEGAWAN"  # a post with few cases in the synthetic mix
HEAD = "KBRI-KUALA-LUMPUR"  # a head of mission over several consulates
ACTIVE = "open,acknowledged,reopened"


async def all_pages(desk: DeskClient, status: str, limit: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        q = f"/api/cases?order=urgency&status={status}&limit={limit}"
        code, page = await desk.get(q + (f"&after={after}" if after else ""))
        assert code == 200, page
        seen += page["cases"]
        after = page.get("next")
        if not after:
            return seen


def urgency_key(case: dict[str, Any]) -> tuple[int, str, str]:
    due = queries.desk_due(case)
    return (1, "", case["case_id"]) if due is None else (0, due, case["case_id"])


async def test_keyset_paging_over_thousands_of_cases(
    settings: Settings, worker: WorkerProcess
) -> None:
    policy = load_policy()
    cases = synthetic_cases(N, policy, seed=11)
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await copy_cases(conn, cases) == N
    finally:
        await conn.close()
    _, hq = await new_token(settings, hq=True)
    _, johor = await new_token(settings, posts=[JOHOR])
    mine = {
        c.case_id
        for c in cases
        if c.status != "resolved" and (c.post_id == JOHOR or c.escalated_to == JOHOR)
    }
    assert len(mine) > 200  # several pages

    async with DeskClient(worker.url) as post_desk, DeskClient(worker.url) as hq_desk:
        assert await post_desk.sign_in(johor) == 303
        assert await hq_desk.sign_in(hq) == 303
        for desk, status, limit, expected in (
            (post_desk, ACTIVE, 50, mine),
            (hq_desk, ACTIVE, 500, {c.case_id for c in cases if c.status != "resolved"}),
            (hq_desk, "", 1000, {c.case_id for c in cases}),  # resolved ones last, no deadline
        ):
            seen = await all_pages(desk, status, limit)
            ids = [c["case_id"] for c in seen]
            assert len(ids) == len(set(ids)), "a case came twice"
            assert set(ids) == expected, "a case is missing or one too many"
            assert [urgency_key(c) for c in seen] == sorted(urgency_key(c) for c in seen)
        # Many cases share a deadline (opened in the same minute): the keyset's case_id
        # tie-break is what keeps them apart.
        dues = [queries.desk_due(c.public()) for c in cases if c.status != "resolved"]
        assert len(dues) - len(set(dues)) > 50

    conn = await asyncpg.connect(settings.database_url)
    try:
        # A head of mission: its own cases, the ones escalated to it and its consulates'
        # from level 1 on (one ordered slice per post, migration 014): every page in order,
        # each visible case once, the same set as the access rule in Python.
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        for post in (HEAD, FEW):
            scope = Scope("t", frozenset({post}), False)
            expected = {
                c.case_id
                for c in cases
                if c.status != "resolved" and can_see_case(scope, c, policy)
            }
            seen, after = [], None
            while True:
                page = await queries.list_cases(
                    conn, {"status": ACTIVE}, visible=case_filter(scope, policy), limit=40,
                    after=after, order="urgency",
                )  # fmt: skip
                seen += page
                if len(page) < 40:
                    break
                after = queries.page_cursor(page[-1], "urgency")
            ids = [c["case_id"] for c in seen]
            assert len(ids) == len(set(ids)) and set(ids) == expected, post
            assert [urgency_key(c) for c in seen] == sorted(urgency_key(c) for c in seen)
        for post in (JOHOR, FEW):
            visible = case_filter(Scope("t", frozenset({post}), False), policy)
            sql, args = queries.list_cases_sql(
                {"status": ACTIVE}, visible=visible, limit=50, order="urgency"
            )
            raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
            nodes = plan_nodes(json.loads(raw)[0]["Plan"])
            assert not any(n.startswith("Seq Scan on cases") for n in nodes), (post, nodes)
            assert any("Index Scan" in n and "cases" in n for n in nodes), (post, nodes)
    finally:
        await conn.close()
