"""Read-model queries behind the HTTP API (design §6). Any worker answers any query."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from handlers.access import CaseFilter, Scope, can_see_case, worker_view
from handlers.model import Case, iso, parse_dt
from handlers.policy import Policy

# the pool's own decoder of jsonb: the cache reads a document exactly as a fetched one
from infra.db import stored_json
from infra.metrics import DatabaseSnapshot, SourceStatus
from infra.store import load_aggregates
from infra.tokens import ACTIVE_TOKEN_SQL, token_active

CASE_FILTERS = ("post_id", "status", "severity", "worker_id", "kind", "category", "q")
ORDERS = ("newest", "urgency")
# The deadline the desk counts down to: an acknowledged case's resolve_due, an open or
# reopened case's ack_due, none once resolved. Same expression as the index of migration 008.
DESK_DUE = (
    "(CASE WHEN status = 'acknowledged' THEN resolve_due"
    " WHEN status <> 'resolved' THEN ack_due END)"
)


async def get_worker(
    conn: asyncpg.Connection, worker_id: str, scope: Scope, policy: Policy
) -> dict[str, Any] | None:
    """The worker (design §6 keys, plus journey dates and claims) as ``scope`` may see it
    (``handlers.access.worker_view``); None when unknown or not visible."""
    aggs = await load_aggregates(conn, [worker_id])
    agg = aggs[worker_id]
    if not agg.exists:
        return None
    body = agg.worker_public()
    w = agg.worker
    body["departed_at"] = iso(w.departed_at)
    body["returned_at"] = iso(w.returned_at)
    body["contract_end"] = iso(w.contract_end)
    body["insured_from"] = iso(w.insured_from)
    body["claims"] = [c.to_doc() for c in sorted(agg.claims.values(), key=lambda c: c.claim_id)]
    body["updated_at"] = iso(w.updated_at)
    return worker_view(scope, agg, policy, body)


async def list_cases(
    conn: asyncpg.Connection,
    filters: dict[str, str],
    *,
    visible: CaseFilter | None = None,
    limit: int = 100,
    after: str | None = None,
    order: str = "newest",
) -> list[dict[str, Any]]:
    """Cases matching the filters, ``visible`` (a post token's
    ``handlers.access.case_filter``; None: every case) limiting the scope.

    Filters are exact matches; ``status`` may list several values (``open,reopened``); ``q``
    matches the start of the case id or of the worker id. ``order`` is ``newest`` (opened_at
    descending) or ``urgency`` (the desk deadline ascending: overdue first, then the nearest;
    cases without one last). Both are keyset-paged: pass :func:`page_cursor` as ``after``."""
    sql, args = list_cases_sql(filters, visible=visible, limit=limit, after=after, order=order)
    return [Case.from_doc(r["doc"]).public() for r in await conn.fetch(sql, *args)]


def api_json(body: Any) -> str:
    """The API's JSON text of ``body`` (every reply is written so)."""
    return json.dumps(body, ensure_ascii=False, default=str)


class CaseJson:
    """Each listed case's public JSON (``Case.public``) and its API text, by the text of the
    stored document it was made from, so that a page of cases already served is answered
    without decoding, rebuilding and encoding each case again (about 0.7 ms of CPU for 50).

    Rules decided where the design is silent:
    - The key is the whole stored document (its text from PostgreSQL): the public JSON is a
      function of the document alone, so an entry can never be stale; a changed case simply
      has another key, and its old entry ages out.
    - At most ``max_size`` documents (the least recently served go first; with 2,048, the
      first pages of every post and then some: a few MB).
    - Entries are shared between requests and never changed: callers only read them.
    """

    def __init__(self, max_size: int = 2048) -> None:
        self.max_size = max_size
        self._entries: dict[str, tuple[str, dict[str, Any]]] = {}

    def get(self, doc_text: str) -> tuple[str, dict[str, Any]]:
        """(the case's API JSON text, its public JSON) for its stored document's text."""
        entries = self._entries
        entry = entries.pop(doc_text, None)
        if entry is None:
            public = Case.from_doc(stored_json(doc_text)).public()
            entry = (api_json(public), public)
            if len(entries) >= self.max_size:
                del entries[next(iter(entries))]
        entries[doc_text] = entry
        return entry

    def __len__(self) -> int:
        return len(self._entries)


async def list_case_json(
    conn: asyncpg.Connection,
    cache: CaseJson,
    filters: dict[str, str],
    *,
    token_hash: str | None = None,
    visible: CaseFilter | None = None,
    limit: int = 100,
    after: str | None = None,
    order: str = "newest",
) -> list[tuple[str, dict[str, Any]]] | None:
    """:func:`list_cases` as (API JSON text, public JSON) pairs through ``cache``; with
    ``token_hash`` (a scope taken from ``infra.tokens.ScopeCache``) also checks that token
    as :func:`list_cases_if_active` does: None once it is revoked."""
    sql, args = list_cases_sql(
        filters,
        visible=visible,
        limit=limit,
        after=after,
        order=order,
        active_token=token_hash,
        as_text=True,
    )
    rows = await conn.fetch(sql, *args)
    if not rows and token_hash is not None and not await token_active(conn, token_hash):
        return None
    return [cache.get(r["doc"]) for r in rows]


def case_page_json(cases: list[tuple[str, dict[str, Any]]], body: dict[str, Any]) -> str:
    """``api_json({"cases": [public, ...], **body})``, joined from each case's own text."""
    rest = api_json(body)
    return (
        '{"cases": ['
        + ", ".join(text for text, _ in cases)
        + "]"
        + (", " + rest[1:] if body else "}")
    )


def list_cases_sql(
    filters: dict[str, str],
    *,
    visible: CaseFilter | None = None,
    limit: int = 100,
    after: str | None = None,
    order: str = "newest",
    active_token: str | None = None,
    as_text: bool = False,
) -> tuple[str, list[Any]]:
    """The statement and arguments behind :func:`list_cases` (also for ``EXPLAIN``); with
    ``active_token`` (a token hash) it returns no row once that token is revoked; with
    ``as_text`` the documents come as text."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}")
    where: list[str] = []
    args: list[Any] = []
    for name in CASE_FILTERS:
        value = filters.get(name)
        if not value:
            continue
        if name == "q":
            args.append(value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
            where.append(f"(case_id LIKE ${len(args)} OR worker_id LIKE ${len(args)})")
        elif name == "status" and "," in value:
            args.append([v for v in value.split(",") if v])
            where.append(f"status = ANY(${len(args)})")
        else:
            args.append(value)
            where.append(f"{name} = ${len(args)}")
    branches: list[str] = []  # urgency order of a post's token: one ordered read per post
    if visible is not None and order == "urgency":
        for post in sorted(visible.posts):
            args.append(post)
            branches.append(f"doc->>'escalated_to' = ${len(args)}")
        for post, level in sorted(_min_levels(visible).items()):
            args.append(post)
            branches.append(
                f"post_id = ${len(args)}" + (f" AND escalation_level >= {level}" if level else "")
            )
    elif visible is not None:
        args.append(sorted(visible.posts))
        ors = [f"doc->>'escalated_to' = ANY(${len(args)})"]
        for level, posts in enumerate(visible.by_level):
            if posts:
                args.append(sorted(posts))
                ors.append(f"(escalation_level >= {level} AND post_id = ANY(${len(args)}))")
        where.append("(" + " OR ".join(ors) + ")")
    if order == "urgency":
        if after:
            due, case_id = _parse_cursor(after, allow_none=True)
            if due is None:
                args.append(case_id)
                where.append(f"({DESK_DUE} IS NULL AND case_id > ${len(args)})")
            else:
                args += [due, case_id]
                where.append(
                    f"(({DESK_DUE}, case_id) > (${len(args) - 1}, ${len(args)})"
                    f" OR {DESK_DUE} IS NULL)"
                )
        sort = f"{DESK_DUE} ASC NULLS LAST, case_id ASC"
    else:
        if after:
            opened_at, case_id = _parse_cursor(after)
            args += [opened_at, case_id]
            where.append(f"(opened_at, case_id) < (${len(args) - 1}, ${len(args)})")
        sort = "opened_at DESC, case_id DESC"
    args.append(limit)
    lim = f"${len(args)}"
    doc = "doc::text AS doc" if as_text else "doc"
    outer: list[str] = []  # the outer statement's own conditions
    if active_token is not None:  # a one-time filter: no row once the token is revoked
        args.append(active_token)
        outer.append(ACTIVE_TOKEN_SQL.format(len(args)))
    if not branches:
        outer = where + outer
        sql = (
            f"SELECT {doc} FROM cases"
            + (" WHERE " + " AND ".join(outer) if outer else "")
            + f" ORDER BY {sort} LIMIT {lim}"
        )
        return sql, args
    # A post's queue is the union of per-post slices, each read in deadline order from an
    # index that leads with the post (migration 014) and cut at the page size; the page is
    # the first ``limit`` of their union. One ordered read of the whole urgency index
    # filtered by "post = X OR escalated to X" walks past every other post's cases instead.
    common = " AND ".join(where)
    parts = [
        f"(SELECT case_id, {DESK_DUE} AS due FROM cases WHERE {b}"
        + (f" AND {common}" if common else "")
        + f" ORDER BY {sort} LIMIT {lim})"
        for b in branches
    ]
    sql = (
        f"SELECT {doc} FROM cases WHERE case_id IN (SELECT case_id FROM ("
        + " UNION ".join(parts)
        + f") AS slices ORDER BY due ASC NULLS LAST, case_id ASC LIMIT {lim})"
        + "".join(f" AND {c}" for c in outer)
        + f" ORDER BY {sort} LIMIT {lim}"
    )
    return sql, args


def _min_levels(visible: CaseFilter) -> dict[str, int]:
    """Each post of ``visible.by_level`` with the lowest escalation level it is seen from."""
    out: dict[str, int] = {}
    for level, posts in enumerate(visible.by_level):
        for post in posts:
            out.setdefault(post, level)
    return out


def desk_due(case: dict[str, Any]) -> str | None:
    """The desk deadline of a case's public JSON (see DESK_DUE)."""
    if case["status"] == "acknowledged":
        return case["resolve_due"]
    if case["status"] == "resolved":
        return None
    return case["ack_due"]


def page_cursor(case: dict[str, Any], order: str = "newest") -> str:
    """The ``after`` value that continues a listing after this case (keyset pagination)."""
    if order == "urgency":
        return f"{desk_due(case) or 'none'}~{case['case_id']}"
    return f"{case['opened_at']}~{case['case_id']}"


def _parse_cursor(after: str, *, allow_none: bool = False) -> tuple[datetime | None, str]:
    value, sep, case_id = after.partition("~")
    try:
        when = parse_dt(value) if sep and value != "none" else None
    except ValueError:
        when = None
    ok = sep and case_id and (when is not None or (allow_none and value == "none"))
    if not ok:
        raise ValueError("after must be the 'next' value of the previous page")
    return when, case_id


async def get_case(conn: asyncpg.Connection, case_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT doc FROM cases WHERE case_id = $1", case_id)
    if row is None:
        return None
    body = Case.from_doc(row["doc"]).public()
    body["timeline"] = [
        {
            "at": iso(r["at"]),
            "type": r["type"],
            "actor": r["actor"],
            "detail": r["detail"],
            "source": r["source"],
            "event_id": r["event_id"],
        }
        for r in await conn.fetch(
            "SELECT at, type, actor, detail, source, event_id FROM case_timeline"
            " WHERE case_id = $1 ORDER BY seq",
            case_id,
        )
    ]
    return body


async def find_case(conn: asyncpg.Connection, case_id: str) -> Case | None:
    row = await conn.fetchrow("SELECT doc FROM cases WHERE case_id = $1", case_id)
    return Case.from_doc(row["doc"]) if row is not None else None


async def get_visible_case(
    conn: asyncpg.Connection, case_id: str, scope: Scope, policy: Policy
) -> dict[str, Any] | None:
    """The case with its timeline if ``scope`` may see it (``handlers.access``), else None."""
    case = await find_case(conn, case_id)
    if case is None or not can_see_case(scope, case, policy):
        return None
    return await get_case(conn, case_id)


async def list_posts(
    conn: asyncpg.Connection, policy: Policy, posts: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    """Every post of the policy; case counts only for the caller's posts (``posts``; None:
    headquarters, all counts), null for the others."""
    counts = {
        r["post_id"]: (r["open"], r["critical"])
        for r in await conn.fetch(
            "SELECT post_id, count(*) AS open,"
            " count(*) FILTER (WHERE severity = 'critical') AS critical"
            " FROM cases WHERE status <> 'resolved' GROUP BY post_id"
        )
    }
    out = []
    for p in policy.posts.values():
        visible = posts is None or p.post_id in posts
        open_, critical = counts.get(p.post_id, (0, 0)) if visible else (None, None)
        out.append(
            {
                "post_id": p.post_id,
                "name": p.name,
                "country": p.country,
                "mission_kind": p.mission_kind,
                "labour_post": p.labour_post,
                "regions": list(p.regions),
                "head_of_mission": p.head_of_mission,
                "protection_desk": p.protection_desk,
                "timezone": p.timezone,
                "open_cases": open_,
                "open_critical": critical,
            }
        )
    return out


async def monitoring_snapshot(conn: asyncpg.Connection, policy: Policy) -> DatabaseSnapshot:
    """The database-wide gauges of ``/metrics`` (``garda_db_*``), in one round trip each."""
    stats_row = await conn.fetchrow(
        # processed_events only grows: its planner estimate, not a full count, on every scrape.
        "SELECT (SELECT greatest(reltuples, 0)::bigint FROM pg_class"
        "        WHERE oid = 'processed_events'::regclass) AS processed,"
        " (SELECT count(*) FROM deadletters) AS deadletters,"
        " (SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL)"
        "   AS outbox_pending,"
        " (SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL) AS outbox_parked,"
        " (SELECT min(created_at) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL)"
        "   AS outbox_oldest,"
        " (SELECT count(*) FROM cases WHERE next_due <= now()) AS deadlines_due,"
        " (SELECT min(next_due) FROM cases WHERE next_due IS NOT NULL) AS oldest_due,"
        " now() AS taken_at"
    )
    rows = await conn.fetch(
        "SELECT post_id, severity, count(*) AS n FROM cases WHERE status <> 'resolved'"
        " GROUP BY post_id, severity"
    )
    watched = await conn.fetch(
        "SELECT w.source, w.watched_since, w.silent,"
        " (SELECT max(s.last_seen_at) FROM source_seen s WHERE s.source = w.source)"
        "   AS last_seen_at"
        " FROM source_watch w WHERE w.source = ANY($1) ORDER BY w.source",
        [s.source for s in policy.sources],
    )
    return DatabaseSnapshot(
        sources=tuple(
            SourceStatus(r["source"], r["last_seen_at"], r["watched_since"], r["silent"])
            for r in watched
        ),
        cases_open={(r["post_id"], r["severity"]): r["n"] for r in rows},
        outbox_backlog=stats_row["outbox_pending"],
        outbox_oldest=stats_row["outbox_oldest"],
        outbox_parked=stats_row["outbox_parked"],
        processed_events=stats_row["processed"],
        deadletters=stats_row["deadletters"],
        deadlines_due=stats_row["deadlines_due"],
        oldest_due=stats_row["oldest_due"],
        taken_at=stats_row["taken_at"],
    )


BOARD_DAYS = 14  # days of opened-case counts in each post's chart
ACK_WINDOW_DAYS = 30  # the median time to acknowledge looks this far back


async def board(
    conn: asyncpg.Connection, policy: Policy, posts: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    """Headquarters board: one row per post (``posts``: only those) with open, overdue and
    escalated (level 1, level 2) case counts, the median seconds from opening to
    acknowledgement over the last ACK_WINDOW_DAYS, and cases opened per day for the last
    BOARD_DAYS days (oldest first). Cases count at their assigned post."""
    args: list[Any] = [ACK_WINDOW_DAYS, BOARD_DAYS]
    scope = ""
    if posts is not None:
        args.append(sorted(posts))
        scope = " WHERE post_id = ANY($3)"
    rows = await conn.fetch(
        "SELECT post_id,"
        " count(*) FILTER (WHERE status <> 'resolved') AS open,"
        f" count(*) FILTER (WHERE status <> 'resolved' AND {DESK_DUE} < now()) AS overdue,"
        " count(*) FILTER (WHERE status <> 'resolved' AND escalation_level = 1) AS level1,"
        " count(*) FILTER (WHERE status <> 'resolved' AND escalation_level >= 2) AS level2,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM"
        "   (doc->>'acknowledged_at')::timestamptz - opened_at))"
        "   FILTER (WHERE (doc->>'acknowledged_at')::timestamptz"
        "           > now() - make_interval(days => $1)) AS median_ack,"
        " array_agg(floor(extract(epoch FROM now() - opened_at) / 86400)::int)"
        "   FILTER (WHERE opened_at > now() - make_interval(days => $2)) AS ages"
        f" FROM cases{scope} GROUP BY post_id",
        *args,
    )
    by_post = {r["post_id"]: r for r in rows}
    out = []
    for p in policy.posts.values():
        if posts is not None and p.post_id not in posts:
            continue
        r = by_post.get(p.post_id)
        daily = [0] * BOARD_DAYS
        for age in (r["ages"] or []) if r else []:
            if 0 <= age < BOARD_DAYS:
                daily[BOARD_DAYS - 1 - age] += 1
        median = r["median_ack"] if r else None
        out.append(
            {
                "post_id": p.post_id,
                "name": p.name,
                "country": p.country,
                "timezone": p.timezone,
                "open": r["open"] if r else 0,
                "overdue": r["overdue"] if r else 0,
                "level1": r["level1"] if r else 0,
                "level2": r["level2"] if r else 0,
                "median_ack_seconds": round(median) if median is not None else None,
                "opened_daily": daily,
            }
        )
    return out


async def changed_since(
    conn: asyncpg.Connection,
    since: datetime,
    posts: frozenset[str] | None = None,
    limit: int = 500,
) -> list[tuple[datetime, dict[str, Any]]]:
    """Cases written after ``since`` (oldest change first) as (updated_at, public JSON)."""
    args: list[Any] = [since, limit]
    scope = ""
    if posts is not None:
        args.append(sorted(posts))
        scope = " AND (post_id = ANY($3) OR doc->>'escalated_to' = ANY($3))"
    rows = await conn.fetch(
        f"SELECT updated_at, doc FROM cases WHERE updated_at > $1{scope}"
        " ORDER BY updated_at LIMIT $2",
        *args,
    )
    return [(r["updated_at"], Case.from_doc(r["doc"]).public()) for r in rows]
