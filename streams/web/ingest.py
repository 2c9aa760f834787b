"""``POST /api/events``: producers that cannot speak Kafka send the same CloudEvents here.

Rules decided where the design is silent: only producers' event types are accepted (case
actions go through ``/api/cases/{id}/<action>``, which checks the token's scope, and
``garda.*`` commands are Garda's own); an invalid event is refused with 400 *and*
dead-lettered like a Kafka record, so both channels leave the same trace.

Who may send what is ``handlers.access`` (its docstring has the rules): the token must own
the event's ``source`` (``garda tokens create --producer SOURCE``; headquarters included),
and a post token's event is dry-run against the worker's current state and must change
nothing outside its posts. A refusal is 403 (a rule refusing the event in the dry run: its
own status), audited, and dead-lettered with the reason (``forbidden: ...``).

A body over the HTTP server's limit (aiohttp's ``client_max_size``, 1 MiB) is 413,
dead-lettered with the reason only, and audited.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web
from faust.web import Request, Response

from errors import InvalidEvent, Rejected
from handlers import access
from handlers.dispatch import handle
from infra.logging import safe_error
from infra.metrics import DEADLETTERS
from infra.store import DeadLetter, load_aggregates, write_dead_letters
from infra.tokens import Scope
from schemas import topics
from schemas.envelope import Envelope, decode
from streams.http_errors import http_status
from streams.web.common import ApiView, log, write_endpoint

INGEST_TOPICS = (topics.DEPARTURES, topics.INCIDENTS, topics.CLAIMS)
TOPIC_OF_TYPE = {t: topic for topic in INGEST_TOPICS for t in topics.TYPES_BY_TOPIC[topic]}


class Ingest(ApiView):
    @write_endpoint
    async def post(self, request: Request, scope: Scope) -> Response:
        runtime = self.runtime
        headers = ce_headers(request)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            # the body is not kept (that is the point of the limit): only the reason
            reason = f"request body too large: {exc.text}"
            await self.dead_letter(b"", headers, reason)
            await self.audit(scope, request, 413, None, {"error": reason})
            return self.fail(413, reason)
        try:
            env = decode(None, body, headers)
        except InvalidEvent as exc:
            await self.dead_letter(body, headers, str(exc))
            await self.audit(scope, request, 400, None, {"error": str(exc)})
            return self.fail(400, str(exc), field=exc.field)
        if env.type not in TOPIC_OF_TYPE:
            reason = (
                f"{env.type} is not accepted here: case actions go to "
                "POST /api/cases/{case_id}/<action>, garda.* types are internal"
            )
            await self.dead_letter(body, headers, reason)
            await self.audit(scope, request, 422, env.id, {"error": reason})
            return self.fail(422, reason, field="type", accepted=sorted(TOPIC_OF_TYPE))
        refusal = await self.refusal(scope, env)
        if refusal is not None:
            status, reason = refusal
            await self.dead_letter(body, headers, reason)
            await self.audit(scope, request, status, env.id, {"error": reason})
            return self.fail(status, reason, field="source" if status == 403 else None)
        topic = runtime.settings.topic(TOPIC_OF_TYPE[env.type])
        try:
            await runtime.relay.send_raw(topic, env.subject.encode(), body, headers)
        except Exception as exc:  # noqa: BLE001 - broker down or record too large
            log.warning("ingest not published", event_id=env.id, error=safe_error(exc))
            await self.audit(scope, request, 503, env.id, {"error": safe_error(exc)})
            return self.fail(503, "the event could not be published; retry it")
        await self.audit(scope, request, 202, env.id, {"type": env.type})
        log.info("event ingested", event_id=env.id, type=env.type, worker_id=env.subject)
        return self.reply({"accepted": True, "id": env.id, "topic": topic}, status=202)

    async def refusal(self, scope: Scope, env: Envelope) -> tuple[int, str] | None:
        """(status, reason) when ``scope`` may not publish ``env`` (handlers.access), else None."""
        reason = access.source_refusal(scope, env.source)
        if reason is not None:
            return 403, f"forbidden: {reason}"
        if scope.hq or not scope.posts:
            return None
        policy = self.runtime.policy
        async with self.runtime.db.pool.acquire() as conn:
            before = (await load_aggregates(conn, [env.subject]))[env.subject]
        try:
            result = handle(before, env, policy, datetime.now(UTC))
        except Rejected as exc:
            return http_status(exc), f"rejected: {exc.reason}"
        except Exception as exc:  # noqa: BLE001 - the rules could not apply it: refuse, say why
            log.warning("ingest dry run failed", event_id=env.id, error=type(exc).__name__)
            return 422, f"rejected: the rules could not apply this event ({type(exc).__name__})"
        reason = access.effects_refusal(scope, before, result, policy)
        return (403, f"forbidden: {reason}") if reason is not None else None

    async def dead_letter(self, body: bytes, headers: list[tuple[str, bytes]], error: str) -> None:
        runtime = self.runtime
        dead = DeadLetter(
            topic="http:/api/events",
            partition=0,
            offset=time.time_ns(),
            error=error,
            key=None,
            value=body,
            headers=headers,
        )
        async with runtime.db.pool.acquire() as conn, conn.transaction():
            seqs = await write_dead_letters(conn, [dead], runtime.settings.topic(topics.DEADLETTER))
        DEADLETTERS.labels("http:/api/events", "invalid").inc()
        await runtime.relay.publish_with_retry(seqs)


def _raw(text: str) -> bytes:
    """The bytes the client sent: aiohttp decodes header bytes as UTF-8 with surrogateescape
    (a non-UTF-8 byte becomes a lone surrogate); this gives them back, never raising."""
    return text.encode("utf-8", "surrogateescape")


def ce_headers(request: Request) -> list[tuple[str, bytes]]:
    """CloudEvents HTTP binary mode: ``ce-*`` headers become Kafka ``ce_*`` headers, with the
    bytes as sent (``decode`` refuses a value that is not UTF-8 with its reason)."""
    out: list[tuple[str, bytes]] = []
    for k, v in request.headers.items():
        lk = k.lower()
        if lk.startswith("ce-"):
            out.append(("ce_" + lk[3:], _raw(v)))  # aiohttp admits only token names
        elif lk == "content-type":
            out.append(("content-type", _raw(v)))
    if not any(k.startswith("ce_") for k, _ in out):
        # No ce-* headers: the body is a structured CloudEvent, whatever JSON type it was sent as.
        out = [(k, v) for k, v in out if k != "content-type"]
        out.append(("content-type", b"application/cloudevents+json"))
    return out


ROUTES = {"/api/events": Ingest}
