"""Alerting hooks over HTTP: a case's escalation ledger, and silences for headquarters.

- ``GET /api/cases/{case_id}/deliveries``: the ledger (``infra.hooks.ledger``): notified →
  delivered → acknowledged, per delivery, with every attempt. Same access rule as the case
  view: 404 for a case the token may not see.
- ``GET /api/silences[?all=1]``: active silences (with ``all``, ended ones too).
- ``POST /api/silences``: ``{"matchers": {"post": ["KBRI-DOHA"], "severity": ["low"]},
  "until": "2h" | "2026-12-01T18:00:00Z", "reason": "…", "author": "officer-hq-3"}`` → 201
  with the silence. ``matchers`` may also be a list in the CLI syntax (``["post=KBRI-DOHA",
  "severity=medium,low"]``).
- ``POST /api/silences/{silence_id}/expire`` or ``DELETE /api/silences/{silence_id}`` (body or
  query ``author``) → 200 with the silence; 404 when unknown or already over.

Rules decided where the design is silent:
- Silences are headquarters' tool: a post's token gets 403 on every silences endpoint (a
  post silencing its own alerts would hide them from headquarters too).
- The author is the officer id in the body (``author``, or ``actor`` as in case actions); the
  audit row carries the token id as well (``add_silence``/``expire_silence`` write it).
"""

from __future__ import annotations

import json
from typing import Any

from faust.web import Request, Response

from errors import ConfigError
from handlers import access
from infra import queries
from infra.hooks.ledger import case_ledger
from infra.hooks.matching import matcher_from_doc, parse_matcher_args
from infra.hooks.silences import (
    add_silence,
    expire_silence,
    get_silence,
    list_silences,
    parse_until,
)
from infra.tokens import Scope
from streams.web.common import ApiView, token_required, write_endpoint

SILENCE_FIELDS = {"matchers", "until", "reason", "author", "actor"}


class CaseDeliveries(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope, case_id: str) -> Response:
        async with self.runtime.db.pool.acquire() as conn:
            case = await queries.find_case(conn, case_id)
            if case is None or not access.can_see_case(scope, case, self.runtime.policy):
                return self.fail(404, f"unknown case {case_id}")
            ledger = await case_ledger(conn, case_id)
        return self.reply(ledger)


async def _json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _author(body: dict[str, Any], request: Request) -> str | None:
    value = body.get("author") or body.get("actor") or request.query.get("author")
    return value.strip() if isinstance(value, str) and value.strip() else None


class Silences(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope) -> Response:
        if not scope.hq:
            return self.fail(403, "silences are for headquarters tokens")
        include_over = request.query.get("all", "") not in ("", "0", "false")
        async with self.runtime.db.pool.acquire() as conn:
            found = await list_silences(conn, include_over=include_over)
        return self.reply({"silences": [s.public() for s in found], "count": len(found)})

    @write_endpoint
    async def post(self, request: Request, scope: Scope) -> Response:
        if not scope.hq:
            await self.audit(scope, request, 403, None, {"error": "not headquarters"})
            return self.fail(403, "silences are for headquarters tokens")
        body = await _json_body(request)
        if body is None:
            return self.fail(400, "body must be a JSON object")
        extra = set(body) - SILENCE_FIELDS
        if extra:
            return self.fail(
                400,
                f"unexpected field(s): {', '.join(sorted(extra))}",
                allowed=sorted(SILENCE_FIELDS - {"actor"}),
            )
        author = _author(body, request)
        if author is None:
            return self.fail(422, "author (the officer id) is required", field="author")
        for name in ("until", "reason"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                return self.fail(422, f"{name} is required", field=name)
        raw = body.get("matchers")
        try:
            if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
                matcher = parse_matcher_args(raw)
            elif isinstance(raw, dict):
                matcher = matcher_from_doc(raw, "matchers")
            else:
                return self.fail(
                    422,
                    'matchers is required: {"post": ["KBRI-DOHA"]} or ["post=KBRI-DOHA"]',
                    field="matchers",
                )
            async with self.runtime.db.pool.acquire() as conn:
                silence = await add_silence(
                    conn,
                    matcher,
                    until=parse_until(body["until"]),
                    author=author,
                    reason=body["reason"],
                    token_id=scope.token_id,
                    via="api",
                )
        except ConfigError as exc:
            await self.audit(scope, request, 422, None, {"error": str(exc)})
            return self.fail(422, str(exc))
        return self.reply(silence.public(), status=201)


class SilenceView(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope, silence_id: str) -> Response:
        if not scope.hq:
            return self.fail(403, "silences are for headquarters tokens")
        async with self.runtime.db.pool.acquire() as conn:
            found = await get_silence(conn, silence_id)
        if found is None:
            return self.fail(404, f"unknown silence {silence_id}")
        return self.reply(found.public())

    @write_endpoint
    async def delete(self, request: Request, scope: Scope, silence_id: str) -> Response:
        return await expire(self, request, scope, silence_id)


class SilenceExpire(ApiView):
    @write_endpoint
    async def post(self, request: Request, scope: Scope, silence_id: str) -> Response:
        return await expire(self, request, scope, silence_id)


async def expire(view: ApiView, request: Request, scope: Scope, silence_id: str) -> Response:
    if not scope.hq:
        await view.audit(scope, request, 403, None, {"error": "not headquarters"})
        return view.fail(403, "silences are for headquarters tokens")
    body = await _json_body(request) or {}
    author = _author(body, request)
    if author is None:
        return view.fail(422, "author (the officer id) is required", field="author")
    async with view.runtime.db.pool.acquire() as conn:
        ended = await expire_silence(
            conn, silence_id, by=author, token_id=scope.token_id, via="api"
        )
    if ended is None:
        detail = {"action": "silence.expire", "silence_id": silence_id, "author": author}
        await view.audit(scope, request, 404, None, {**detail, "error": "no active silence"})
        return view.fail(404, f"no active silence {silence_id}")
    return view.reply(ended.public())


ROUTES = {
    "/api/cases/{case_id}/deliveries": CaseDeliveries,
    "/api/silences": Silences,
    "/api/silences/{silence_id}": SilenceView,
    "/api/silences/{silence_id}/expire": SilenceExpire,
}
