"""``/ack/{token}``: acknowledge a case from the link a notification carried (``ack_url``).

``GET`` shows a small confirmation page (which case, its severity, kind and post, its
status) with a form asking for the officer id; ``POST`` (form field, or JSON ``actor``)
acknowledges the case. The link is its own credential: single case, single use, expiring,
signed (``infra.hooks.acklinks``); no bearer token is asked.

The acknowledgement is a normal case action: the same checks through the pure handlers as
``POST /api/cases/{id}/acknowledge`` (``streams.web.actions``), published on
``pmi.case-actions.v1``, applied in order by the processor (timeline, stops the clock), and
audited (``token_id`` ``ack-link:<delivery id>``; the token itself is never written down).

Rules decided where the design is silent:
- The link acts for the post the case is at (the processor's ``may_act`` rule holds).
- The link is marked used (``claim_use``) only after the checks passed and before the event
  is published; if publishing fails the mark is undone (``release_use``), so the officer can
  try again. Two officers using one link at once: exactly one wins, the other gets 410.
- A case already acknowledged (through the desk or the API) answers 409 and leaves the link
  unused; a resolved case likewise.
- Answers: forged or malformed token 404, link row gone (pruned) 404, expired 410, used
  410 (saying by whom and when). A form post gets an HTML page, a JSON post a JSON body.
- The page needs no script; it carries the desk's security headers and a link to the
  case's desk page.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web
from faust.web import Request, Response

from infra import queries, sessions
from infra.hooks.acklinks import AckLink, AckLinkError, claim_use, read_token, release_use
from infra.hooks.acklinks import signing_key as ack_key
from infra.tokens import Scope, audit
from streams.web.actions import CheckedAction, check_action, publish_action
from streams.web.common import ApiView, log
from streams.web.desk import SECURITY_HEADERS, case_page_path

ACKNOWLEDGED = "pmi.case.acknowledged"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Garda · {title}</title>
<link rel="stylesheet" href="/desk/static/desk.css">
</head>
<body>
<main class="panel narrow">
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"""


def _aio(request: Request) -> web.Request:
    return cast(web.Request, request)


class AckPage(ApiView):
    async def _read(self, token: str) -> AckLink:
        """The link a token stands for; AckLinkError when forged, malformed or expired."""
        async with self.runtime.db.pool.acquire() as conn:
            return read_token(await ack_key(conn), token)

    async def _unusable(self, link: AckLink) -> AckLinkError | None:
        """Why a well-signed link cannot be used (row gone, used before), or None."""
        async with self.runtime.db.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT used_at, actor FROM hook_ack_links WHERE link_id = $1", link.link_id
            )
        if row is None:
            return AckLinkError("this acknowledge link is not known (or no longer kept)", 404)
        if row["used_at"] is not None:
            return AckLinkError(_used(row["used_at"], row["actor"]), 410)
        return None

    def html_page(self, status: int, title: str, body: str) -> Response:
        text = PAGE.format(title=html.escape(title), body=body)
        return self.bytes(
            text.encode(),
            status=status,
            headers={**SECURITY_HEADERS, "Content-Type": "text/html; charset=utf-8"},
        )

    def answer(self, as_json: bool, status: int, message: str, **extra: Any) -> Response:
        if as_json:
            key = "error" if status >= 400 else "message"
            return self.bytes(
                json.dumps({key: message, **extra}, default=str).encode(),
                status=status,
                content_type="application/json",
                headers={"Cache-Control": "no-store"},
            )
        title = "Acknowledged" if status < 400 else "Cannot acknowledge"
        body = f"<p>{html.escape(message)}</p>"
        case_id = extra.get("case_id")
        if case_id and status < 400:
            body += _desk_link(case_id)
        return self.html_page(status, title, body)

    async def get(self, request: Request, token: str) -> Response:
        try:
            link = await self._read(token)
        except AckLinkError as exc:
            return self.answer(False, exc.status, exc.reason)
        refusal = await self._unusable(link)
        if refusal is not None:
            return self.answer(False, refusal.status, refusal.reason)
        async with self.runtime.db.pool.acquire() as conn:
            case = await queries.get_case(conn, link.case_id)
        if case is None:
            return self.answer(False, 404, f"case {link.case_id} is not known")
        rows = "".join(
            f"<dt>{html.escape(label)}</dt><dd>{html.escape(str(case.get(key) or '–'))}</dd>"
            for label, key in (
                ("Case", "case_id"),
                ("Severity", "severity"),
                ("Kind", "kind"),
                ("Category", "category"),
                ("Post", "post_id"),
                ("Status", "status"),
                ("Opened", "opened_at"),
                ("Acknowledge by", "ack_due"),
            )
        )
        expires = link.expires_at.isoformat()
        body = (
            f"<dl>{rows}</dl>"
            f'<form method="post" action="/ack/{html.escape(token)}">'
            '<label for="actor">Your officer id</label> '
            '<input id="actor" name="actor" required maxlength="64" autocomplete="username"> '
            '<button type="submit">Acknowledge this case</button>'
            "</form>"
            f"<p>This link works once, until {html.escape(expires)}.</p>" + _desk_link(link.case_id)
        )
        return self.html_page(200, f"Acknowledge case {link.case_id}", body)

    async def post(self, request: Request, token: str) -> Response:
        as_json = request.headers.get("Content-Type", "").startswith("application/json")
        if not sessions.origin_ok("POST", request.headers.get("Origin"), _aio(request).host):
            return self.answer(as_json, 403, "cross-origin posts are refused")
        try:
            link = await self._read(token)
        except AckLinkError as exc:
            await self._audit(request, None, exc.status, None, {"error": exc.reason})
            return self.answer(as_json, exc.status, exc.reason)
        refusal = await self._unusable(link)
        if refusal is not None:
            await self._audit(request, link, refusal.status, None, {"error": refusal.reason})
            return self.answer(as_json, refusal.status, refusal.reason)
        actor = sessions.clean_actor(await _actor(request, as_json))
        if actor is None:
            return self.answer(as_json, 422, "your officer id is required", field="actor")
        async with self.runtime.db.pool.acquire() as conn:
            case = await queries.find_case(conn, link.case_id)
        if case is None:
            return self.answer(as_json, 404, f"case {link.case_id} is not known")
        scope = Scope(f"ack-link:{link.delivery_id}", frozenset({case.post_id}), hq=False)
        checked = await check_action(
            self.runtime, scope, link.case_id, ACKNOWLEDGED, (), {"actor": actor}
        )
        if not isinstance(checked, CheckedAction):
            status, reply = checked
            await self._audit(request, link, status, None, {"actor": actor, **reply})
            return self.answer(as_json, status, str(reply.get("error")), case_id=link.case_id)
        async with self.runtime.db.pool.acquire() as conn:
            won = await claim_use(conn, link, actor, checked.event_id)
        if not won:
            async with self.runtime.db.pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT used_at, actor FROM hook_ack_links WHERE link_id = $1", link.link_id
                )
            reason = _used(row["used_at"], row["actor"]) if row else "link not known"
            await self._audit(request, link, 410, None, {"actor": actor, "error": reason})
            return self.answer(as_json, 410, reason)
        status, reply = await publish_action(self.runtime, checked)
        if status != 202:
            async with self.runtime.db.pool.acquire() as conn:
                await release_use(conn, link)
        await self._audit(
            request, link, status, reply.get("id"), {"actor": actor, "error": reply.get("error")}
        )
        if status != 202:
            return self.answer(as_json, status, str(reply["error"]), case_id=link.case_id)
        log.info("case acknowledged from a link", case_id=link.case_id, actor=actor)
        return self.answer(
            as_json,
            202,
            f"case {link.case_id} is acknowledged by {actor}; thank you",
            case_id=link.case_id,
            id=reply["id"],
            accepted=True,
        )

    async def _audit(
        self,
        request: Request,
        link: AckLink | None,
        status: int,
        event_id: str | None,
        detail: dict[str, Any],
    ) -> None:
        scope = Scope(f"ack-link:{link.delivery_id}", frozenset(), False) if link else None
        path = f"/ack/{link.link_id}" if link else "/ack/<invalid>"
        info = {"action": "acknowledge (link)", **detail}
        if link:
            info["case_id"] = link.case_id
        async with self.runtime.db.pool.acquire() as conn:
            await audit(conn, scope, "POST", path, status, event_id, info)


async def _actor(request: Request, as_json: bool) -> Any:
    if as_json:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return None
        return body.get("actor") if isinstance(body, dict) else None
    form = await request.post()
    return form.get("actor")


def _used(at: datetime, actor: str | None) -> str:
    when = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"this acknowledge link was already used (by {actor or 'someone'}, {when})"


def _desk_link(case_id: str) -> str:
    return f'<p><a href="{html.escape(case_page_path(case_id))}">Open the case on the desk</a></p>'


ROUTES = {"/ack/{token}": AckPage}
