"""``/desk``: the Atnaker desk, a web page for posts and headquarters.

The page is plain HTML, CSS and JavaScript from ``streams/desk_static`` (no build step, no
CDN). Signing in exchanges a bearer token once for a session cookie (``infra.sessions``);
from then on the page calls the ordinary API (``/api/cases``, ``/api/cases/{id}/<action>``,
``/api/board``, ``/api/stream``...) with that cookie, so it sees and may do exactly what the
token may, through the same views.

Rules decided where the design is silent:
- Every desk path serves the same page; the page routes itself. ``/desk/cases/{id}`` checks
  the case against the session's scope first and answers 404 for a case the session may
  not see, so a typed URL reveals nothing either.
- Sign-in takes the token and the officer id (the ``actor`` of every action the page
  sends); a wrong token answers 401 with the sign-in form again, and is audited.
- Responses carry a strict Content-Security-Policy (scripts and styles from the page's own
  origin only) and are never cached.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from string import Template
from typing import Any, cast
from urllib.parse import quote, urlsplit

from aiohttp import web
from faust.web import Request, Response

from handlers import access
from infra import queries, sessions
from infra.logging import get_logger
from infra.tokens import audit
from streams.web.common import ApiView, desk_session, rate_limited

log = get_logger("garda.desk")

STATIC = resources.files("streams") / "desk_static"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def case_page_path(case_id: str) -> str:
    """The desk page of a case (where an acknowledgement link lands)."""
    return f"/desk/cases/{quote(case_id, safe='')}"


def aio(request: Request) -> web.Request:
    """The aiohttp request behind Faust's abstract one."""
    return cast(web.Request, request)


def is_tls(request: Request) -> bool:
    """Served over TLS, directly or behind a proxy that says so."""
    if aio(request).scheme == "https":
        return True
    return request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a desk path only (never another site)."""
    if not value or not value.startswith("/desk") or value.startswith("//"):
        return "/desk"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/desk"
    return value


def page_html(*, view: str, status: int = 200, error: str = "", next_path: str = "/desk") -> str:
    template = Template((STATIC / "desk.html").read_text(encoding="utf-8"))
    return template.substitute(
        view=html.escape(view), status=status, error=html.escape(error), next=html.escape(next_path)
    )


class DeskView(ApiView):
    def page(
        self, *, view: str, status: int = 200, error: str = "", next_path: str = "/desk"
    ) -> Response:
        body = page_html(view=view, status=status, error=error, next_path=next_path)
        return self.bytes(
            body.encode(),
            status=status,
            headers={**SECURITY_HEADERS, "Content-Type": "text/html; charset=utf-8"},
        )


class DeskPage(DeskView):
    """The queue (``/desk``) and the board (``/desk/board``); the sign-in form without a
    session."""

    async def get(self, request: Request) -> Response:
        session = await desk_session(self.runtime, request)
        if session is None:
            return self.page(view="signin", next_path=safe_next(aio(request).path_qs))
        view = "board" if aio(request).path.rstrip("/").endswith("/board") else "queue"
        return self.page(view=view)


class DeskCasePage(DeskView):
    async def get(self, request: Request, case_id: str) -> Response:
        session = await desk_session(self.runtime, request)
        if session is None:
            return self.page(view="signin", next_path=safe_next(aio(request).path_qs))
        async with self.runtime.db.pool.acquire() as conn:
            case = await queries.find_case(conn, case_id)
        if case is None or not access.can_see_case(session.scope, case, self.runtime.policy):
            return self.page(view="notfound", status=404)
        return self.page(view="case")


class DeskSession(DeskView):
    """``GET``: who is signed in (and the CSRF token the page sends back on writes).
    ``POST``: sign in (form fields ``token``, ``actor``, ``next``)."""

    async def get(self, request: Request) -> Response:
        session = await desk_session(self.runtime, request)
        if session is None:
            return self.fail(401, "not signed in")
        scope = session.scope
        return self.bytes(
            json.dumps(
                {
                    "actor": session.actor,
                    "csrf": session.csrf,
                    "hq": scope.hq,
                    "posts": sorted(scope.posts),
                    "token_id": scope.token_id,
                    "ends_at": session.ends_at().isoformat(),
                    "idle_seconds": int(sessions.IDLE.total_seconds()),
                }
            ).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    @rate_limited
    async def post(self, request: Request) -> Response:
        form = await request.post()
        next_path = safe_next(str(form.get("next") or ""))
        if not sessions.origin_ok("POST", request.headers.get("Origin"), aio(request).host):
            return self.page(view="signin", status=403, error="origin", next_path=next_path)
        token = str(form.get("token") or "").strip()
        actor = sessions.clean_actor(form.get("actor"))
        if actor is None:
            return self.page(view="signin", status=422, error="actor", next_path=next_path)
        async with self.runtime.db.pool.acquire() as conn:
            started = await sessions.start_session(conn, token, actor) if token else None
            status = 303 if started else 401
            await audit(
                conn,
                started[1].scope if started else None,
                "POST",
                aio(request).path,
                status,
                None,
                {"action": "desk sign-in", "actor": actor},
            )
            if started:
                await sessions.prune_sessions(conn)
        if started is None:
            return self.page(view="signin", status=401, error="token", next_path=next_path)
        session_id, session = started
        log.info("desk sign-in", token_id=session.scope.token_id, actor=actor)
        headers = {
            **SECURITY_HEADERS,
            "Location": next_path,
            "Set-Cookie": sessions.cookie_header(session_id, secure=is_tls(request)),
        }
        return self.bytes(b"", status=303, headers=headers)


class DeskSignOut(DeskView):
    """``POST /desk/signout`` (with the CSRF header): ends the session, clears the cookie."""

    async def post(self, request: Request) -> Response:
        session_id = request.cookies.get(sessions.COOKIE, "")
        session = await desk_session(self.runtime, request)
        if session is not None:
            if not sessions.csrf_ok(
                session.csrf, "POST", request.headers.get(sessions.CSRF_HEADER)
            ):
                return self.fail(403, f"missing or wrong {sessions.CSRF_HEADER} header")
            async with self.runtime.db.pool.acquire() as conn:
                await sessions.end_session(conn, session_id)
                await audit(
                    conn,
                    session.scope,
                    "POST",
                    aio(request).path,
                    200,
                    None,
                    {"action": "sign-out"},
                )
        return self.bytes(
            b'{"signed_out": true}',
            content_type="application/json",
            headers={"Set-Cookie": sessions.clear_cookie_header(secure=is_tls(request))},
        )


class DeskStatic(ApiView):
    """The page's own files (only files that exist in the package folder)."""

    async def get(self, request: Request, name: str) -> Response:
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in CONTENT_TYPES:
            return self.fail(404, "not found")
        item = STATIC / name
        if not item.is_file():
            return self.fail(404, "not found")
        return self.bytes(
            item.read_bytes(),
            headers={
                "Content-Type": CONTENT_TYPES[suffix],
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )


def _routes() -> dict[str, Any]:
    return {
        "/desk": DeskPage,
        "/desk/board": DeskPage,
        "/desk/cases/{case_id}": DeskCasePage,
        "/desk/session": DeskSession,
        "/desk/signout": DeskSignOut,
        "/desk/static/{name}": DeskStatic,
    }


ROUTES = _routes()
