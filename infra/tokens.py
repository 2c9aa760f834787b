"""API bearer tokens: created once (the secret is shown once), stored as a SHA-256 hash.

A token is scoped to posts and/or headquarters, and bound to the producer sources it may
publish as (``garda tokens create --post ID | --hq | --producer SOURCE``, combinable). What a
scope allows is decided in ``handlers.access``, the one module of access rules.

Source names bound to a token: 1 to 200 characters, no whitespace or control characters,
not Garda's own (``garda``, ``garda-*``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from handlers.access import Scope, is_reserved_source

__all__ = [
    "ACTIVE_TOKEN_SQL",
    "Scope",
    "ScopeCache",
    "TokenInfo",
    "audit",
    "create_token",
    "list_tokens",
    "resolve_hash",
    "resolve_token",
    "token_active",
]

TOKEN_PREFIX = "garda_"
MAX_SOURCE_LENGTH = 200


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    posts: list[str]
    hq: bool
    label: str | None
    created_at: datetime
    revoked_at: datetime | None
    sources: list[str]

    @property
    def scope_text(self) -> str:
        """e.g. ``HQ``, ``KJRI-JOHOR-BAHRU``, ``producer:bpjs-tk/claims``."""
        parts = (["HQ"] if self.hq else []) + self.posts
        parts += [f"producer:{s}" for s in self.sources]
        return ",".join(parts)


def check_source(source: str) -> str:
    """A source name a token may be bound to (ValueError otherwise)."""
    if not source or len(source) > MAX_SOURCE_LENGTH:
        raise ValueError(f"a producer source must have 1 to {MAX_SOURCE_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in source):
        raise ValueError(f"producer source {source!r} contains whitespace or control characters")
    if is_reserved_source(source):
        raise ValueError(f"producer source {source!r} is Garda's own; bind another name")
    return source


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    conn: asyncpg.Connection,
    *,
    posts: list[str],
    hq: bool,
    label: str | None = None,
    sources: Iterable[str] = (),
) -> tuple[str, str]:
    """Returns (token_id, secret token). Only the hash is stored."""
    bound = sorted({check_source(s) for s in sources})
    if not hq and not posts and not bound:
        raise ValueError("a token needs at least one post, headquarters or a producer source")
    token_id = "tok_" + secrets.token_hex(6)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_tokens (token_id, token_hash, posts, hq, label, sources)"
        " VALUES ($1,$2,$3,$4,$5,$6)",
        token_id,
        hash_token(token),
        sorted(set(posts)),
        hq,
        label,
        bound,
    )
    return token_id, token


async def list_tokens(conn: asyncpg.Connection) -> list[TokenInfo]:
    rows = await conn.fetch(
        "SELECT token_id, posts, hq, label, created_at, revoked_at, sources FROM api_tokens"
        " ORDER BY created_at"
    )
    return [
        TokenInfo(
            r["token_id"],
            list(r["posts"]),
            r["hq"],
            r["label"],
            r["created_at"],
            r["revoked_at"],
            list(r["sources"]),
        )
        for r in rows
    ]


async def revoke_token(conn: asyncpg.Connection, token_id: str) -> bool:
    status = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL",
        token_id,
    )
    return status.endswith(" 1")


# True while the token of hash $1 is not revoked: what a statement run with a cached scope
# (``ScopeCache``) adds, so that a revocation holds from the next request on.
ACTIVE_TOKEN_SQL = "EXISTS (SELECT 1 FROM api_tokens WHERE token_hash = ${} AND revoked_at IS NULL)"


class ScopeCache:
    """Scopes of tokens already resolved, by token hash, for the views whose own statement
    re-checks that the token is still active (``ACTIVE_TOKEN_SQL``): such a request needs
    no lookup of its own, one round trip instead of two, and a revoked token is refused
    from the next request on, as without the cache.

    Rules decided where the design is silent:
    - Only a token's revocation is checked again: its scope (posts, headquarters, sources)
      is never changed once created (no command edits it; ``garda tokens create`` makes a
      new token).
    - At most ``max_size`` tokens (the least recently resolved go first): it holds hashes
      and scopes, never the secrets.
    - Unknown and revoked tokens are never kept (each such request looks the token up).
    """

    def __init__(self, max_size: int = 1024) -> None:
        self.max_size = max_size
        self._scopes: dict[str, Scope] = {}

    def get(self, token_hash: str) -> Scope | None:
        return self._scopes.get(token_hash)

    def put(self, token_hash: str, scope: Scope) -> None:
        self._scopes.pop(token_hash, None)
        self._scopes[token_hash] = scope
        while len(self._scopes) > self.max_size:
            del self._scopes[next(iter(self._scopes))]

    def forget(self, token_hash: str) -> None:
        self._scopes.pop(token_hash, None)

    def __len__(self) -> int:
        return len(self._scopes)


async def token_active(conn: asyncpg.Connection, token_hash: str) -> bool:
    """Whether the token of this hash exists and is not revoked."""
    return bool(await conn.fetchval("SELECT " + ACTIVE_TOKEN_SQL.format(1), token_hash))


async def resolve_token(conn: asyncpg.Connection, token: str) -> Scope | None:
    return await resolve_hash(conn, hash_token(token))


async def resolve_hash(conn: asyncpg.Connection, token_hash: str) -> Scope | None:
    """The scope of the active token of this hash (``hash_token``), or None."""
    row = await conn.fetchrow(
        "SELECT token_id, posts, hq, sources FROM api_tokens"
        " WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash,
    )
    if row is None:
        return None
    return Scope(row["token_id"], frozenset(row["posts"]), row["hq"], frozenset(row["sources"]))


async def audit(
    conn: asyncpg.Connection,
    scope: Scope | None,
    method: str,
    path: str,
    status: int,
    event_id: str | None = None,
    detail: dict | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (token_id, method, path, status, event_id, detail)"
        " VALUES ($1,$2,$3,$4,$5,$6)",
        scope.token_id if scope else None,
        method,
        path,
        status,
        event_id,
        detail or {},
    )
