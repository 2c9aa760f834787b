"""Read endpoints: workers, cases, posts, schemas. Everything comes from PostgreSQL."""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response

from handlers import access
from handlers.model import CASE_KINDS, CASE_STATUSES, SEVERITIES
from infra import queries
from infra.tokens import Scope
from schemas.types import CATEGORIES, json_schema, list_types
from streams.web.common import ApiView, revoked, token_required

ENUM_FILTERS = {
    "severity": SEVERITIES,
    "status": CASE_STATUSES,
    "kind": CASE_KINDS,
    "category": CATEGORIES,
}


class WorkerView(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope, worker_id: str) -> Response:
        async with self.runtime.db.pool.acquire() as conn:
            body = await queries.get_worker(conn, worker_id, scope, self.runtime.policy)
        if body is None:
            return self.fail(404, f"unknown worker {worker_id}")
        return self.reply(body)


def _checks_token(handler: Any) -> Any:
    return token_required(handler, checks_token=True)


class CaseList(ApiView):
    @_checks_token
    async def get(
        self, request: Request, scope: Scope, active_token: str | None = None
    ) -> Response:
        q = request.query
        unknown = set(q) - set(queries.CASE_FILTERS) - {"limit", "after", "order"}
        if unknown:
            return self.fail(
                400,
                f"unknown filter(s): {', '.join(sorted(unknown))}",
                filters=list(queries.CASE_FILTERS),
            )
        for name, allowed in ENUM_FILTERS.items():
            values = q.get(name, "").split(",") if name == "status" else [q.get(name, "")]
            if any(v and v not in allowed for v in values):
                return self.fail(400, f"{name} must be one of {', '.join(allowed)}")
        order = q.get("order", "newest")
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return self.fail(400, "limit must be an integer from 1 to 1000")
        try:
            async with self.runtime.db.pool.acquire() as conn:
                cases = await queries.list_case_json(
                    conn,
                    self.runtime.case_json,
                    dict(q),
                    token_hash=active_token,
                    visible=access.case_filter(scope, self.runtime.policy),
                    limit=limit,
                    after=q.get("after"),
                    order=order,
                )
        except ValueError as exc:
            return self.fail(400, str(exc))
        if cases is None:
            assert active_token is not None  # only a re-checked token can be found revoked
            return revoked(self, active_token)
        # {"cases": [...], "count": n, "next": ...}, each case's text from the cache
        rest: dict[str, Any] = {"count": len(cases)}
        if len(cases) == limit:
            rest["next"] = queries.page_cursor(cases[-1][1], order)
        return self.bytes(
            queries.case_page_json(cases, rest).encode(), content_type="application/json"
        )


class CaseView(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope, case_id: str) -> Response:
        async with self.runtime.db.pool.acquire() as conn:
            body = await queries.get_visible_case(conn, case_id, scope, self.runtime.policy)
        if body is None:
            return self.fail(404, f"unknown case {case_id}")
        return self.reply(body)


class Posts(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope) -> Response:
        async with self.runtime.db.pool.acquire() as conn:
            posts = await queries.list_posts(conn, self.runtime.policy, scope.post_filter)
        return self.reply({"posts": posts})


class Board(ApiView):
    """Headquarters board: per post open, overdue, escalated, median time to acknowledge
    and cases opened per day (a post's token: its own posts only)."""

    @token_required
    async def get(self, request: Request, scope: Scope) -> Response:
        async with self.runtime.db.pool.acquire() as conn:
            rows = await queries.board(conn, self.runtime.policy, scope.post_filter)
        return self.reply(
            {
                "posts": rows,
                "days": queries.BOARD_DAYS,
                "ack_window_days": queries.ACK_WINDOW_DAYS,
            }
        )


class SchemaList(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope) -> Response:
        return self.reply({"types": list_types()})


class SchemaView(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope, type_: str) -> Response:
        if type_ not in list_types():
            return self.fail(404, f"unknown event type {type_}", types=list_types())
        return self.reply(json_schema(type_))


ROUTES = {
    "/api/workers/{worker_id}": WorkerView,
    "/api/cases": CaseList,
    "/api/cases/{case_id}": CaseView,
    "/api/posts": Posts,
    "/api/board": Board,
    "/api/schemas": SchemaList,
    "/api/schemas/{type_}": SchemaView,
}
