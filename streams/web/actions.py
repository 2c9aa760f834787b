"""``POST /api/cases/{case_id}/<action>``: responders act on a case.

The action is checked against the current case with the same pure rules the processor uses,
then published on ``pmi.case-actions.v1``, where the processor applies it in order with the
worker's other events. Every outcome, refusals included, is audited.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faust.web import Request, Response

from errors import Forbidden, InvalidEvent, NotFound, Rejected
from handlers import access
from handlers.dispatch import handle
from infra import queries
from infra.logging import safe_error
from infra.store import load_aggregates
from infra.tokens import Scope
from schemas import topics
from schemas.envelope import Envelope, encode, new_envelope
from schemas.fields import iso
from streams.http_errors import http_status
from streams.web.common import ApiView, log, write_endpoint

ACTIONS = {
    "acknowledge": ("pmi.case.acknowledged", ()),
    "notes": ("pmi.case.note-added", ("note",)),
    "refer": ("pmi.case.referred", ("to",)),
    "resolve": ("pmi.case.resolved", ("resolution", "note", "substantiated")),
    "reopen": ("pmi.case.reopened", ()),
    # the answer to a referral (the organisation, or the post on its behalf)
    "referral-accepted": ("pmi.case.referral-accepted", ("note",)),
    "referral-declined": ("pmi.case.referral-declined", ("note",)),
}


class CaseAction(ApiView):
    @write_endpoint
    async def post(self, request: Request, scope: Scope, case_id: str, action: str) -> Response:
        detail: dict[str, Any] = {"action": action, "case_id": case_id}
        if action not in ACTIONS:
            error = f"unknown action {action}"
            await self.audit(scope, request, 404, None, {**detail, "error": error})
            return self.fail(404, error, actions=sorted(ACTIONS))
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            error = "body must be a JSON object"
            await self.audit(scope, request, 400, None, {**detail, "error": error})
            return self.fail(400, error)
        type_, fields = ACTIONS[action]
        status, reply = await case_action(self.runtime, scope, case_id, type_, fields, body)
        await self.audit(
            scope, request, status, reply.get("id"), {**detail, "error": reply.get("error")}
        )
        return self.reply(reply, status=status)


@dataclass(frozen=True)
class CheckedAction:
    """An action the pure rules accepted, ready to publish."""

    envelope: Envelope
    case_id: str
    worker_id: str
    actor: str

    @property
    def event_id(self) -> str:
        return self.envelope.id


async def check_action(
    runtime: Any,
    scope: Scope,
    case_id: str,
    type_: str,
    fields: tuple[str, ...],
    body: dict[str, Any],
) -> CheckedAction | tuple[int, dict[str, Any]]:
    """Check the action against the current case with the same pure rules the processor
    uses: the event to publish, or the HTTP status and reply body of the refusal."""
    policy = runtime.policy
    async with runtime.db.pool.acquire() as conn:
        case = await queries.find_case(conn, case_id)
        if case is None or not access.can_see_case(scope, case, policy):
            return 404, {"error": f"unknown case {case_id}"}
        worker_id = case.worker_id
        aggs = await load_aggregates(conn, [worker_id])
    actor = body.get("actor")
    if not isinstance(actor, str) or not actor.strip():
        return 422, {"error": "actor (the officer id) is required", "field": "actor"}
    wanted = body.get("post_id")
    acting = access.acting_post(scope, case, policy, wanted if isinstance(wanted, str) else None)
    if acting is None or (wanted is not None and not isinstance(wanted, str)):
        return 403, {"error": f"this token does not act for post {wanted}"}
    data: dict[str, Any] = {
        "case_id": case_id,
        "worker_id": worker_id,
        "actor": actor,
        "post_id": acting,
        "at": iso(datetime.now(UTC)),
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
    try:
        env = new_envelope(
            type=type_,
            subject=worker_id,
            data=data,
            id=str(uuid.uuid4()),
            source=f"garda-api/{scope.token_id}",
            time=datetime.now(UTC),
        )
        handle(aggs[worker_id], env, policy, datetime.now(UTC))
    except InvalidEvent as exc:
        return 422, {"error": str(exc), "field": exc.field}
    except Rejected as exc:
        # A case the acting post may not see is answered like an unknown one.
        status = 404 if isinstance(exc, NotFound | Forbidden) else http_status(exc)
        return status, {"error": exc.reason}
    return CheckedAction(env, case_id, worker_id, actor)


async def publish_action(runtime: Any, action: CheckedAction) -> tuple[int, dict[str, Any]]:
    """Publish a checked action on pmi.case-actions.v1 (keyed by worker): 202, or 503 when
    the broker did not take it."""
    env = action.envelope
    topic = runtime.settings.topic(topics.CASE_ACTIONS)
    try:
        await runtime.relay.send_raw(
            topic,
            action.worker_id.encode(),
            encode(env),
            [("content-type", b"application/cloudevents+json")],
        )
    except Exception as exc:  # noqa: BLE001 - broker down or record too large
        log.warning("case action not published", event_id=env.id, error=safe_error(exc))
        return 503, {"error": "the action could not be published; retry it", "id": env.id}
    log.info(
        "case action accepted",
        event_id=env.id,
        type=env.type,
        case_id=action.case_id,
        worker_id=action.worker_id,
        actor=action.actor,
    )
    return 202, {"accepted": True, "id": env.id, "type": env.type, "case_id": action.case_id}


async def case_action(
    runtime: Any,
    scope: Scope,
    case_id: str,
    type_: str,
    fields: tuple[str, ...],
    body: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    """Check the action against the current case (same rules as the processor), then publish
    it on pmi.case-actions.v1. Returns the HTTP status and the reply body."""
    checked = await check_action(runtime, scope, case_id, type_, fields, body)
    if not isinstance(checked, CheckedAction):
        return checked
    return await publish_action(runtime, checked)


ROUTES = {"/api/cases/{case_id}/{action}": CaseAction}
