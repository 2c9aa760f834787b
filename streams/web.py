"""The HTTP API (design §6) as Faust web views. Reads come from PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from faust.web import Request, Response, View

from handlers.dispatch import handle
from handlers.model import CASE_KINDS, CASE_STATUSES, SEVERITIES
from handlers.policy import Policy
from infra import queries
from infra.errors import GardaError, InvalidEvent, Rejected
from infra.logging import get_logger
from infra.store import BatchWrite, DeadLetter, load_aggregates, write_batch
from infra.tokens import Scope, audit, resolve_token
from schemas import topics
from schemas.envelope import decode, encode, new_envelope
from schemas.types import json_schema, list_types
from streams.lag import partition_lag

log = get_logger("garda.api")

# What the ingest endpoint accepts: producers' events only. Case actions go through the
# /api/cases/{id}/... endpoints (which check the token's scope) and garda.* commands are
# Garda's own, so neither may be injected through /api/events.
INGEST_TOPICS = (topics.DEPARTURES, topics.INCIDENTS, topics.CLAIMS)
TOPIC_OF_TYPE = {t: topic for topic in INGEST_TOPICS for t in topics.TYPES_BY_TOPIC[topic]}


def _json(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(
        json.dumps(body, ensure_ascii=False, default=str).encode(),
        content_type="application/json",
        status=status,
    )


def _error(view: View, status: int, message: str, **extra: Any) -> Response:
    return _json(view, {"error": message, **extra}, status=status)


ACTIONS = {
    "acknowledge": ("pmi.case.acknowledged", ()),
    "notes": ("pmi.case.note-added", ("note",)),
    "refer": ("pmi.case.referred", ("to",)),
    "resolve": ("pmi.case.resolved", ("resolution", "note")),
    "reopen": ("pmi.case.reopened", ()),
}


ENUM_FILTERS = {"severity": SEVERITIES, "status": CASE_STATUSES, "kind": CASE_KINDS}


class Unauthorized(GardaError):
    """No valid bearer token (HTTP 401)."""


async def _scope(runtime: Any, request: Request) -> Scope:
    """The caller's token scope; raises Unauthorized (401) without a valid bearer token."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required (garda tokens create --post ID | --hq)")
    async with runtime.db.pool.acquire() as conn:
        scope = await resolve_token(conn, token.strip())
    if scope is None:
        raise Unauthorized("unknown or revoked token")
    return scope


def _acting_post(
    scope: Scope, body: dict[str, Any], policy: Policy, case_post: str, responsible: set[str]
) -> str:
    """Which post the action is taken as: the body's post_id if the token holds it, else the
    case's post, else the post it was escalated to, when the token holds one; else
    headquarters for an HQ token."""
    wanted = body.get("post_id")
    if wanted:
        if wanted == policy.headquarters and scope.hq:
            return wanted
        if wanted in scope.posts:
            return wanted
        raise Rejected(f"this token does not act for post {wanted}", status=403)
    if case_post in scope.posts:
        return case_post
    mine = sorted(responsible & scope.posts)
    if mine:
        return mine[0]
    if scope.hq:
        return policy.headquarters
    return sorted(scope.posts)[0]


def register(app: Any) -> None:
    runtime = app.runtime

    async def authorized(view: View, request: Request) -> Scope | Response:
        if "\x00" in request.path or any("\x00" in v for v in request.query.values()):
            return _error(view, 400, "NUL characters are not allowed in the path or query")
        try:
            return await _scope(runtime, request)
        except Unauthorized as exc:
            return _error(view, 401, str(exc))
        except Exception as exc:  # noqa: BLE001 - the token store is unreachable
            log.warning("token check failed", error=repr(exc))
            return _error(view, 503, "the database is unavailable; retry shortly")

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            checks: dict[str, Any] = {}
            ok = True
            try:
                async with runtime.db.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
                checks["database"] = "ok"
            except Exception as exc:  # noqa: BLE001 - health reports, never raises
                checks["database"] = f"error: {exc}"
                ok = False
            checks["broker"] = "ok" if await _broker_ok(runtime) else "unreachable"
            ok = ok and checks["broker"] == "ok"
            checks["lag"] = _lag(app)
            checks["assigned"] = _assigned(app)
            checks["status"] = "ok" if ok else "degraded"
            return _json(self, checks, status=200 if ok else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            async with runtime.db.pool.acquire() as conn:
                s = await queries.stats(conn)
            lines = [
                "# TYPE garda_events_total counter",
                *(
                    f'garda_events_total{{outcome="{k}"}} {v}'
                    for k, v in sorted(runtime.processor.totals.items())
                ),
                "# TYPE garda_deadletters_total counter",
                f"garda_deadletters_total {s['deadletters']}",
                "# HELP garda_processed_events processed input events (planner estimate)",
                "# TYPE garda_processed_events gauge",
                f"garda_processed_events {s['processed']}",
                "# TYPE garda_outbox_pending gauge",
                f"garda_outbox_pending {s['outbox_pending']}",
                "# TYPE garda_open_cases gauge",
                f"garda_open_cases {s['open_cases']}",
                "# TYPE garda_consumer_lag gauge",
                *(
                    f'garda_consumer_lag{{topic="{k.rsplit(":", 1)[0]}",partition="{k.rsplit(":", 1)[1]}"}} {v}'
                    for k, v in _lag(app).items()
                ),
            ]
            return self.text("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")

    @app.page("/api/workers/{worker_id}")
    class WorkerView(View):
        async def get(self, request: Request, worker_id: str) -> Response:
            scope = await authorized(self, request)
            if not isinstance(scope, Scope):
                return scope
            async with runtime.db.pool.acquire() as conn:
                body = await queries.get_worker(conn, worker_id, scope.post_filter)
            if body is None:
                return _error(self, 404, f"unknown worker {worker_id}")
            return _json(self, body)

    @app.page("/api/cases")
    class CaseList(View):
        async def get(self, request: Request) -> Response:
            scope = await authorized(self, request)
            if not isinstance(scope, Scope):
                return scope
            q = request.query
            unknown = set(q) - set(queries.CASE_FILTERS) - {"limit", "after"}
            if unknown:
                return _error(
                    self,
                    400,
                    f"unknown filter(s): {', '.join(sorted(unknown))}",
                    filters=list(queries.CASE_FILTERS),
                )
            for name, allowed in ENUM_FILTERS.items():
                if q.get(name) and q[name] not in allowed:
                    return _error(self, 400, f"{name} must be one of {', '.join(allowed)}")
            try:
                limit = int(q.get("limit", "100"))
            except ValueError:
                limit = 0
            if not 1 <= limit <= 1000:
                return _error(self, 400, "limit must be an integer from 1 to 1000")
            try:
                async with runtime.db.pool.acquire() as conn:
                    cases = await queries.list_cases(
                        conn, dict(q), posts=scope.post_filter, limit=limit, after=q.get("after")
                    )
            except ValueError as exc:
                return _error(self, 400, str(exc))
            body: dict[str, Any] = {"cases": cases, "count": len(cases)}
            if len(cases) == limit:
                body["next"] = queries.page_cursor(cases[-1])
            return _json(self, body)

    @app.page("/api/cases/{case_id}")
    class CaseView(View):
        async def get(self, request: Request, case_id: str) -> Response:
            scope = await authorized(self, request)
            if not isinstance(scope, Scope):
                return scope
            async with runtime.db.pool.acquire() as conn:
                body = await queries.get_case(conn, case_id)
            if body is None or not scope.can_see_any(queries.responsible_posts(body)):
                return _error(self, 404, f"unknown case {case_id}")
            return _json(self, body)

    @app.page("/api/posts")
    class Posts(View):
        async def get(self, request: Request) -> Response:
            scope = await authorized(self, request)
            if not isinstance(scope, Scope):
                return scope
            async with runtime.db.pool.acquire() as conn:
                posts = await queries.list_posts(conn, runtime.policy, scope.post_filter)
            return _json(self, {"posts": posts})

    @app.page("/api/schemas")
    class SchemaList(View):
        async def get(self, request: Request) -> Response:
            scope = await authorized(self, request)
            if not isinstance(scope, Scope):
                return scope
            return _json(self, {"types": list_types()})

    @app.page("/api/schemas/{type_}")
    class SchemaView(View):
        async def get(self, request: Request, type_: str) -> Response:
            scope = await authorized(self, request)
            if not isinstance(scope, Scope):
                return scope
            if type_ not in list_types():
                return _error(self, 404, f"unknown event type {type_}", types=list_types())
            return _json(self, json_schema(type_))

    @app.page("/api/events")
    class Ingest(View):
        async def post(self, request: Request) -> Response:
            scope = await authorized(self, request)
            if not isinstance(scope, Scope):
                await _audit(
                    runtime, None, "POST", "/api/events", 401, None, {"error": "unauthorized"}
                )
                return scope
            body = await request.read()
            headers = _ce_headers(request)
            try:
                env = decode(None, body, headers)
            except InvalidEvent as exc:
                await _dead_letter_http(runtime, body, headers, str(exc))
                await _audit(runtime, scope, "POST", "/api/events", 400, None, {"error": str(exc)})
                return _error(self, 400, str(exc), field=exc.field)
            if env.type not in TOPIC_OF_TYPE:
                reason = (
                    f"{env.type} is not accepted here: case actions go to "
                    "POST /api/cases/{case_id}/<action>, garda.* types are internal"
                )
                await _dead_letter_http(runtime, body, headers, reason)
                await _audit(runtime, scope, "POST", "/api/events", 422, env.id, {"error": reason})
                return _error(self, 422, reason, field="type", accepted=sorted(TOPIC_OF_TYPE))
            topic = runtime.settings.topic(TOPIC_OF_TYPE[env.type])
            try:
                await runtime.relay.send_raw(topic, env.subject.encode(), body, headers)
            except Exception as exc:  # noqa: BLE001 - broker down or record too large
                log.warning("ingest not published", event_id=env.id, error=repr(exc))
                await _audit(
                    runtime, scope, "POST", "/api/events", 503, env.id, {"error": repr(exc)}
                )
                return _error(self, 503, "the event could not be published; retry it")
            await _audit(runtime, scope, "POST", "/api/events", 202, env.id, {"type": env.type})
            log.info("event ingested", event_id=env.id, type=env.type, worker_id=env.subject)
            return _json(self, {"accepted": True, "id": env.id, "topic": topic}, status=202)

    _register_actions(app, runtime, authorized)


def _register_actions(app: Any, runtime: Any, authorized: Any) -> None:
    @app.page("/api/cases/{case_id}/{action}")
    class CaseAction(View):
        async def post(self, request: Request, case_id: str, action: str) -> Response:
            scope = await authorized(self, request)
            path = f"/api/cases/{case_id}/{action}"
            early: tuple[int, str] | None = None
            if not isinstance(scope, Scope):
                early = (401, "unauthorized")
            elif action not in ACTIONS:
                early = (404, f"unknown action {action}")
            else:
                try:
                    body = json.loads(await request.read() or b"{}")
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    early = (400, "body must be a JSON object")
            if early is not None:  # refused writes are audited too
                await _audit(
                    runtime,
                    scope if isinstance(scope, Scope) else None,
                    "POST",
                    path,
                    early[0],
                    None,
                    {"action": action, "case_id": case_id, "error": early[1]},
                )
                if not isinstance(scope, Scope):
                    return scope
                extra = {"actions": sorted(ACTIONS)} if early[0] == 404 else {}
                return _error(self, early[0], early[1], **extra)
            type_, fields = ACTIONS[action]
            status, reply = await _case_action(runtime, scope, case_id, type_, fields, body)
            await _audit(
                runtime,
                scope,
                "POST",
                path,
                status,
                reply.get("id"),
                {"action": action, "case_id": case_id, "error": reply.get("error")},
            )
            return _json(self, reply, status=status)


async def _case_action(
    runtime: Any,
    scope: Scope,
    case_id: str,
    type_: str,
    fields: tuple[str, ...],
    body: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    """Check the action against the current case (same rules as the processor), then publish
    it on pmi.case-actions.v1. The processor applies it in order with the worker's events."""
    async with runtime.db.pool.acquire() as conn:
        found = await queries.case_post(conn, case_id)
        if found is None or not scope.can_see_any(found[0]):
            return 404, {"error": f"unknown case {case_id}"}
        responsible, post_id, worker_id = found
        aggs = await load_aggregates(conn, [worker_id])
    actor = body.get("actor")
    if not isinstance(actor, str) or not actor.strip():
        return 422, {"error": "actor (the officer id) is required", "field": "actor"}
    try:
        acting = _acting_post(scope, body, runtime.policy, post_id, responsible)
    except Rejected as exc:
        return exc.status, {"error": exc.reason}
    data: dict[str, Any] = {
        "case_id": case_id,
        "worker_id": worker_id,
        "actor": actor,
        "post_id": acting,
        "at": _now_iso(),
    }
    for name in fields:
        if body.get(name) is not None:
            data[name] = body[name]
    extra = set(body) - {"actor", "post_id", *fields}
    if extra:
        return 400, {
            "error": f"unexpected field(s): {', '.join(sorted(extra))}",
            "allowed": ["actor", "post_id", *fields],
        }
    event_id = str(uuid.uuid4())
    try:
        env = new_envelope(
            type=type_,
            subject=worker_id,
            data=data,
            id=event_id,
            source=f"garda-api/{scope.token_id}",
            time=datetime.now(UTC),
        )
        handle(aggs[worker_id], env, runtime.policy, datetime.now(UTC))
    except InvalidEvent as exc:
        return 422, {"error": str(exc), "field": exc.field}
    except Rejected as exc:
        status = 404 if exc.status in (403, 404) else exc.status
        return status, {"error": exc.reason}
    topic = runtime.settings.topic(topics.CASE_ACTIONS)
    try:
        await runtime.relay.send_raw(
            topic,
            worker_id.encode(),
            encode(env),
            [("content-type", b"application/cloudevents+json")],
        )
    except Exception as exc:  # noqa: BLE001 - broker down or record too large
        log.warning("case action not published", event_id=event_id, error=repr(exc))
        return 503, {"error": "the action could not be published; retry it", "id": event_id}
    log.info(
        "case action accepted",
        event_id=event_id,
        type=type_,
        case_id=case_id,
        worker_id=worker_id,
        actor=actor,
    )
    return 202, {"accepted": True, "id": event_id, "type": type_, "case_id": case_id}


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _audit(
    runtime: Any,
    scope: Scope | None,
    method: str,
    path: str,
    status: int,
    event_id: str | None,
    detail: dict[str, Any],
) -> None:
    async with runtime.db.pool.acquire() as conn:
        await audit(conn, scope, method, path, status, event_id, detail)


def _ce_headers(request: Request) -> list[tuple[str, bytes]]:
    """CloudEvents HTTP binary mode: ``ce-*`` headers become Kafka ``ce_*`` headers."""
    out: list[tuple[str, bytes]] = []
    for k, v in request.headers.items():
        lk = k.lower()
        if lk.startswith("ce-"):
            out.append(("ce_" + lk[3:], v.encode()))
        elif lk == "content-type":
            out.append(("content-type", v.encode()))
    if not any(k.startswith("ce_") for k, _ in out):
        # No ce-* headers: the body is a structured CloudEvent, whatever JSON type it was sent as.
        out = [(k, v) for k, v in out if k != "content-type"]
        out.append(("content-type", b"application/cloudevents+json"))
    return out


async def _dead_letter_http(runtime: Any, body: bytes, headers: list, error: str) -> None:
    batch = BatchWrite(deadletter_topic=runtime.settings.topic(topics.DEADLETTER))
    batch.deadletters.append(
        DeadLetter(
            topic="http:/api/events",
            partition=0,
            offset=time.time_ns(),
            error=error,
            key=None,
            value=body,
            headers=headers,
        )
    )
    async with runtime.db.pool.acquire() as conn, conn.transaction():
        seqs = await write_batch(conn, batch, runtime.processor)
    await runtime.relay.publish_with_retry(seqs)


async def _broker_ok(runtime: Any) -> bool:
    producer = runtime.relay._producer
    if producer is None:
        return False
    try:
        return bool(producer.client.cluster.brokers())
    except Exception:  # noqa: BLE001
        return False


def _assigned(app: Any) -> int:
    """How many input-topic partitions this worker holds (0 until the group has formed)."""
    try:
        return len(app.consumer.assignment())
    except Exception:  # noqa: BLE001 - not started yet
        return 0


def _lag(app: Any) -> dict[str, int]:
    return {f"{t}:{p}": n for (t, p), n in partition_lag(app).items() if n is not None}
