"""What every view shares: JSON replies, the bearer-token check and the audit write.

Every view that needs a token is decorated with :func:`token_required`, the one place the
``Authorization`` header is read; the handler receives the caller's :class:`Scope`. A desk
session cookie (``infra.sessions``) stands in for the bearer token: same scope, same views,
and every write made with it must carry the session's CSRF token.

A view decorated with ``token_required(..., checks_token=True)`` (the case list, the desk
queue's hot read) gets a bearer token's scope from the worker's ``ScopeCache`` without a
lookup, and ``active_token`` (the token's hash) that its own statement must re-check
(``infra.tokens.ACTIVE_TOKEN_SQL``): one round trip instead of two, and a revoked token is
still refused from the next request on. ``active_token`` is None when the scope was just
looked up (or came from a session cookie): nothing left to check.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, cast

from aiohttp import web
from faust.web import Request, Response, View

from errors import GardaError, Unauthorized
from infra import sessions
from infra.logging import get_logger, safe_error
from infra.queries import api_json
from infra.tokens import Scope, audit, hash_token, resolve_hash

log = get_logger("garda.api")


def request_path(request: Request) -> str:
    """The request's path (Faust's abstract ``Request`` does not declare the aiohttp one's)."""
    return cast(web.Request, request).path


P = ParamSpec("P")


class SessionRefused(GardaError):
    """A session cookie without the session's CSRF token, or from another origin (HTTP 403)."""


class ApiView(View):
    """A Faust view with Garda's runtime and JSON helpers."""

    @property
    def runtime(self) -> Any:
        return self.app.runtime  # type: ignore[attr-defined]

    def reply(
        self, body: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return self.bytes(
            api_json(body).encode(),
            content_type="application/json",
            status=status,
            headers=headers,
        )

    def fail(self, status: int, message: str, **extra: Any) -> Response:
        return self.reply({"error": message, **extra}, status=status)

    async def audit(
        self,
        scope: Scope | None,
        request: Request,
        status: int,
        event_id: str | None,
        detail: dict[str, Any],
    ) -> None:
        async with self.runtime.db.pool.acquire() as conn:
            await audit(
                conn, scope, request.method, request_path(request), status, event_id, detail
            )


async def desk_session(runtime: Any, request: Request) -> sessions.Session | None:
    """The live desk session of the request's cookie, if any."""
    session_id = request.cookies.get(sessions.COOKIE)
    if not session_id:
        return None
    async with runtime.db.pool.acquire() as conn:
        return await sessions.resolve_session(conn, session_id)


def check_session_write(session: sessions.Session, request: Request) -> None:
    """Raise SessionRefused unless a write made with this session carries its CSRF token and
    comes from the page's own origin."""
    if not sessions.origin_ok(
        request.method, request.headers.get("Origin"), cast(web.Request, request).host
    ):
        raise SessionRefused("cross-origin writes are refused")
    if not sessions.csrf_ok(
        session.csrf, request.method, request.headers.get(sessions.CSRF_HEADER)
    ):
        raise SessionRefused(f"missing or wrong {sessions.CSRF_HEADER} header (reload the desk)")


async def resolve_scope(runtime: Any, request: Request) -> Scope:
    """The caller's scope, from the bearer token or else the desk session cookie; raises
    Unauthorized without either, SessionRefused for a session write without its CSRF token."""
    return (await _resolve(runtime, request, cached=False))[0]


async def _resolve(runtime: Any, request: Request, *, cached: bool) -> tuple[Scope, str | None]:
    """:func:`resolve_scope`, and with ``cached`` a bearer token's scope from the worker's
    ``ScopeCache`` when it is there: (scope, the token's hash that the view must re-check),
    else (scope, None)."""
    header = request.headers.get("Authorization", "")
    if not header and request.cookies.get(sessions.COOKIE):
        session = await desk_session(runtime, request)
        if session is None:
            raise Unauthorized("the desk session ended; sign in again")
        check_session_write(session, request)
        return session.scope, None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required (garda tokens create --post ID | --hq)")
    if not (token.isascii() and token.strip().isprintable()):
        # a token is printable ASCII; other bytes (decoded by aiohttp as lone surrogates)
        # cannot match one and must not reach the token store
        raise Unauthorized("malformed bearer token")
    token_hash = hash_token(token.strip())
    if cached and (scope := runtime.tokens.get(token_hash)) is not None:
        return scope, token_hash
    async with runtime.db.pool.acquire() as conn:
        scope = await resolve_hash(conn, token_hash)
    if scope is None:
        raise Unauthorized(REVOKED)
    runtime.tokens.put(token_hash, scope)
    return scope, None


REVOKED = "unknown or revoked token"


def revoked(view: ApiView, token_hash: str) -> Response:
    """The answer when a view's statement found its cached token revoked: the 401 of a
    lookup, and the token leaves the cache."""
    view.runtime.tokens.forget(token_hash)
    return view.fail(401, REVOKED)


def route_of(view: ApiView, request: Request) -> str:
    """The route template of a request (``/api/cases/{case_id}``): a closed set, unlike paths."""
    resource = cast(web.Request, request).match_info.route.resource
    return resource.canonical if resource is not None else type(view).__name__


Handler = Callable[Concatenate[Any, Request, Scope, P], Awaitable[Response]]


def token_required(
    handler: Handler[P], *, audit_refusal: bool = False, checks_token: bool = False
) -> Callable[Concatenate[Any, Request, P], Awaitable[Response]]:
    """Run ``handler(self, request, scope, **path_args)`` only for a valid bearer token.

    Without one the reply is 401 (503 when the token store is unreachable); with
    ``audit_refusal`` the refusal is written to the audit log (write endpoints). A client
    with too many failed (4xx) requests gets 429 first (``streams.web.ratelimit``). With
    ``checks_token`` the handler is called with ``active_token`` too (module docstring):
    it must answer :func:`revoked` when its statement finds that token revoked."""

    async def serve(self: ApiView, request: Request, *args: Any, **kwargs: Any) -> Response:
        if "\x00" in request_path(request) or any("\x00" in v for v in request.query.values()):
            return self.fail(400, "NUL characters are not allowed in the path or query")
        try:
            scope, active_token = await _resolve(self.runtime, request, cached=checks_token)
        except Unauthorized as exc:
            if audit_refusal:
                await self.audit(None, request, 401, None, {"error": "unauthorized", **kwargs})
            return self.fail(401, str(exc))
        except SessionRefused as exc:
            if audit_refusal:
                await self.audit(None, request, 403, None, {"error": str(exc), **kwargs})
            return self.fail(403, str(exc))
        except Exception as exc:  # noqa: BLE001 - the token store is unreachable
            log.warning("token check failed", error=safe_error(exc))
            return self.fail(503, "the database is unavailable; retry shortly")
        if checks_token:
            kwargs["active_token"] = active_token
        return await handler(self, request, scope, *args, **kwargs)

    return functools.wraps(handler)(rate_limited(serve))


View_ = Callable[..., Awaitable[Response]]


def rate_limited(handler: View_) -> View_:
    """Answer 429 (with ``Retry-After``) to a client with too many failed requests, before
    ``handler`` runs; a 4xx answer from ``handler`` costs the client one unit
    (``streams.web.ratelimit``). :func:`token_required` includes it."""

    async def wrapper(self: ApiView, request: Request, *args: Any, **kwargs: Any) -> Response:
        limiter = self.runtime.limiter
        client = cast(web.Request, request).remote or "unknown"
        wait = await limiter.retry_after(client)
        if wait is not None:
            await limiter.refused(self.runtime, client, route_of(self, request))
            return self.reply(
                {"error": "too many failed requests from this address; retry later"},
                status=429,
                headers={"Retry-After": str(wait)},
            )
        response = await handler(self, request, *args, **kwargs)
        if 400 <= response.status < 500:
            await limiter.failed(client)
        return response

    return wrapper


def write_endpoint(
    handler: Handler[P],
) -> Callable[Concatenate[Any, Request, P], Awaitable[Response]]:
    """:func:`token_required` for endpoints that change something: refusals are audited."""
    return token_required(handler, audit_refusal=True)
