"""Desk sessions: a bearer token exchanged once for a server-side session behind a cookie.

Rules decided where the design is silent:
- The cookie holds a random session id; the database keeps only its SHA-256, the token id,
  a per-session CSRF token and the officer id the page acts as. The scope is the token's,
  read on every request, so revoking the token ends every session made with it.
- A session ends after ``IDLE`` without a request, after ``MAX_AGE`` in any case, or at
  sign-out. The cookie is ``HttpOnly; SameSite=Strict; Path=/`` (``Secure`` over TLS) and
  has no ``Max-Age``: closing the browser forgets it.
- Every write made with a session cookie carries the session's CSRF token in the
  ``X-Garda-CSRF`` header (compared in constant time), and its ``Origin``, when the browser
  sends one, must be the page's own. Bearer-token calls need neither: a browser never adds a
  bearer token by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg

from infra.tokens import Scope, resolve_token

COOKIE = "garda_desk"
CSRF_HEADER = "X-Garda-CSRF"
IDLE = timedelta(hours=2)
MAX_AGE = timedelta(hours=12)
TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ACTOR_MAX = 64


@dataclass(frozen=True)
class Session:
    scope: Scope
    csrf: str
    actor: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime

    def ends_at(self) -> datetime:
        """When this session ends if nothing else happens (idle or absolute end)."""
        return min(self.expires_at, self.last_seen_at + IDLE)


def hash_session(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def is_live(
    created_at: datetime, last_seen_at: datetime, expires_at: datetime, now: datetime
) -> bool:
    """A session is live until its absolute end and until ``IDLE`` after its last request."""
    return created_at <= now < expires_at and now < last_seen_at + IDLE


def csrf_ok(expected: str, method: str, header: str | None) -> bool:
    """Safe methods pass; any other needs the session's CSRF token, compared in constant time."""
    if method.upper() in SAFE_METHODS:
        return True
    if not header or not expected:
        return False
    return hmac.compare_digest(expected.encode(), header.encode())


def origin_ok(method: str, origin: str | None, host: str | None) -> bool:
    """A write's ``Origin`` (when the browser sends one) must be the page's own host."""
    if method.upper() in SAFE_METHODS or origin is None:
        return True
    if origin == "null" or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


def cookie_header(session_id: str, *, secure: bool) -> str:
    """The ``Set-Cookie`` value that starts a session."""
    parts = [f"{COOKIE}={session_id}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_cookie_header(*, secure: bool) -> str:
    """The ``Set-Cookie`` value that removes the session cookie."""
    parts = [f"{COOKIE}=", "Path=/", "Max-Age=0", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def clean_actor(value: object) -> str | None:
    """The officer id typed at sign-in: 1 to ACTOR_MAX printable characters, or None."""
    if not isinstance(value, str):
        return None
    actor = value.strip()
    if not actor or len(actor) > ACTOR_MAX or not actor.isprintable():
        return None
    return actor


async def start_session(
    conn: asyncpg.Connection, token: str, actor: str, now: datetime | None = None
) -> tuple[str, Session] | None:
    """Exchange a bearer token for a new session: (session id for the cookie, session), or
    None when the token is unknown or revoked."""
    scope = await resolve_token(conn, token)
    if scope is None:
        return None
    now = now or datetime.now(UTC)
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = now + MAX_AGE
    await conn.execute(
        "INSERT INTO desk_sessions (session_hash, token_id, csrf, actor, created_at,"
        " last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $5, $6)",
        hash_session(session_id),
        scope.token_id,
        csrf,
        actor,
        now,
        expires,
    )
    return session_id, Session(scope, csrf, actor, now, now, expires)


async def resolve_session(
    conn: asyncpg.Connection, session_id: str, now: datetime | None = None
) -> Session | None:
    """The live session behind a cookie value (and its token's current scope), or None."""
    if not session_id:
        return None
    now = now or datetime.now(UTC)
    row = await conn.fetchrow(
        "SELECT s.csrf, s.actor, s.created_at, s.last_seen_at, s.expires_at,"
        " t.token_id, t.posts, t.hq"
        " FROM desk_sessions s JOIN api_tokens t USING (token_id)"
        " WHERE s.session_hash = $1 AND s.ended_at IS NULL AND t.revoked_at IS NULL",
        hash_session(session_id),
    )
    if row is None or not is_live(row["created_at"], row["last_seen_at"], row["expires_at"], now):
        return None
    last_seen = row["last_seen_at"]
    if now - last_seen >= TOUCH_EVERY:
        await conn.execute(
            "UPDATE desk_sessions SET last_seen_at = $2 WHERE session_hash = $1",
            hash_session(session_id),
            now,
        )
        last_seen = now
    scope = Scope(row["token_id"], frozenset(row["posts"]), row["hq"])
    return Session(
        scope, row["csrf"], row["actor"], row["created_at"], last_seen, row["expires_at"]
    )


async def end_session(conn: asyncpg.Connection, session_id: str) -> bool:
    """Sign out: the session can never be used again."""
    status = await conn.execute(
        "UPDATE desk_sessions SET ended_at = now() WHERE session_hash = $1 AND ended_at IS NULL",
        hash_session(session_id),
    )
    return status.endswith(" 1")


async def prune_sessions(conn: asyncpg.Connection, now: datetime | None = None) -> int:
    """Delete sessions that ended or expired more than a day ago; returns how many."""
    now = now or datetime.now(UTC)
    status = await conn.execute(
        "DELETE FROM desk_sessions WHERE coalesce(ended_at, least(expires_at, last_seen_at + $2))"
        " < $1",
        now - timedelta(days=1),
        IDLE,
    )
    return int(status.split()[-1])
