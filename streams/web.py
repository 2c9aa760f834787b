"""The HTTP API (design §6) as Faust web views. Reads come from PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

from faust.web import Request, Response, View

from infra import queries
from infra.errors import InvalidEvent
from infra.logging import get_logger
from infra.store import BatchWrite, DeadLetter, write_batch
from schemas import topics
from schemas.envelope import decode
from schemas.types import json_schema, list_types

log = get_logger("garda.api")

TOPIC_OF_TYPE = {t: topic for topic, types in topics.TYPES_BY_TOPIC.items() for t in types}


def _json(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(
        json.dumps(body, ensure_ascii=False, default=str).encode(),
        content_type="application/json",
        status=status,
    )


def _error(view: View, status: int, message: str, **extra: Any) -> Response:
    return _json(view, {"error": message, **extra}, status=status)


def register(app: Any) -> None:
    runtime = app.runtime

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
            async with runtime.db.pool.acquire() as conn:
                body = await queries.get_worker(conn, worker_id)
            if body is None:
                return _error(self, 404, f"unknown worker {worker_id}")
            return _json(self, body)

    @app.page("/api/cases")
    class CaseList(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            unknown = set(q) - set(queries.CASE_FILTERS) - {"limit", "after"}
            if unknown:
                return _error(self, 400, f"unknown filter(s): {', '.join(sorted(unknown))}",
                              filters=list(queries.CASE_FILTERS))
            try:
                limit = min(1000, max(1, int(q.get("limit", "100"))))
            except ValueError:
                return _error(self, 400, "limit must be an integer")
            async with runtime.db.pool.acquire() as conn:
                cases = await queries.list_cases(conn, dict(q), limit=limit, after=q.get("after"))
            return _json(self, {"cases": cases, "count": len(cases)})

    @app.page("/api/cases/{case_id}")
    class CaseView(View):
        async def get(self, request: Request, case_id: str) -> Response:
            async with runtime.db.pool.acquire() as conn:
                body = await queries.get_case(conn, case_id)
            if body is None:
                return _error(self, 404, f"unknown case {case_id}")
            return _json(self, body)

    @app.page("/api/posts")
    class Posts(View):
        async def get(self, request: Request) -> Response:
            async with runtime.db.pool.acquire() as conn:
                posts = await queries.list_posts(conn, runtime.policy)
            return _json(self, {"posts": posts})

    @app.page("/api/schemas")
    class SchemaList(View):
        async def get(self, request: Request) -> Response:
            return _json(self, {"types": list_types()})

    @app.page("/api/schemas/{type_}")
    class SchemaView(View):
        async def get(self, request: Request, type_: str) -> Response:
            if type_ not in list_types():
                return _error(self, 404, f"unknown event type {type_}", types=list_types())
            return _json(self, json_schema(type_))

    @app.page("/api/events")
    class Ingest(View):
        async def post(self, request: Request) -> Response:
            body = await request.read()
            headers = _ce_headers(request)
            try:
                env = decode(None, body, headers)
            except InvalidEvent as exc:
                await _dead_letter_http(runtime, body, headers, str(exc))
                return _error(self, 400, str(exc), field=exc.field)
            topic = runtime.settings.topic(TOPIC_OF_TYPE[env.type])
            await runtime.relay.send_raw(topic, env.subject.encode(), body, headers)
            log.info("event ingested", event_id=env.id, type=env.type, worker_id=env.subject)
            return _json(self, {"accepted": True, "id": env.id, "topic": topic}, status=202)


def _ce_headers(request: Request) -> list[tuple[str, bytes]]:
    """CloudEvents HTTP binary mode: ``ce-*`` headers become Kafka ``ce_*`` headers."""
    out: list[tuple[str, bytes]] = []
    for k, v in request.headers.items():
        lk = k.lower()
        if lk.startswith("ce-"):
            out.append(("ce_" + lk[3:], v.encode()))
        elif lk == "content-type":
            out.append(("content-type", v.encode()))
    return out


async def _dead_letter_http(runtime: Any, body: bytes, headers: list, error: str) -> None:
    batch = BatchWrite(deadletter_topic=runtime.settings.topic(topics.DEADLETTER))
    batch.deadletters.append(
        DeadLetter(topic="http:/api/events", partition=0, offset=time.time_ns(), error=error,
                   key=None, value=body, headers=headers)
    )
    async with runtime.db.pool.acquire() as conn, conn.transaction():
        seqs = await write_batch(conn, batch, runtime.processor.next_due)
    await runtime.relay.publish_with_retry(seqs)


async def _broker_ok(runtime: Any) -> bool:
    producer = runtime.relay._producer
    if producer is None:
        return False
    try:
        return bool(producer.client.cluster.brokers())
    except Exception:  # noqa: BLE001
        return False


def _lag(app: Any) -> dict[str, int]:
    """Per assigned partition: fetch highwater minus the next offset to process."""
    out: dict[str, int] = {}
    try:
        consumer = app.consumer
        for tp in sorted(consumer.assignment()):
            hw = consumer.highwater(tp)
            pos = app.runtime.processor.positions.get((tp.topic, tp.partition))
            if hw is None or hw < 0:
                continue
            out[f"{tp.topic}:{tp.partition}"] = max(0, hw - (pos + 1 if pos is not None else 0))
    except Exception:  # noqa: BLE001 - not started yet
        return out
    return out
