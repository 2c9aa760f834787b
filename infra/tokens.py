"""API bearer tokens: created once (the secret is shown once), stored as a SHA-256 hash.

A token is scoped to one or more posts or to headquarters. ``Scope.can_see(post_id)`` is the
one check every read and write goes through.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

TOKEN_PREFIX = "garda_"


@dataclass(frozen=True)
class Scope:
    token_id: str
    posts: frozenset[str]
    hq: bool

    def can_see(self, post_id: str | None) -> bool:
        return self.hq or (post_id is not None and post_id in self.posts)

    def can_see_any(self, post_ids: set[str]) -> bool:
        return self.hq or bool(self.posts & post_ids)

    @property
    def post_filter(self) -> frozenset[str] | None:
        """None for headquarters (sees everything), else the posts."""
        return None if self.hq else self.posts


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    posts: list[str]
    hq: bool
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    conn: asyncpg.Connection, *, posts: list[str], hq: bool, label: str | None = None
) -> tuple[str, str]:
    """Returns (token_id, secret token). Only the hash is stored."""
    if not hq and not posts:
        raise ValueError("a token needs at least one post, or headquarters")
    token_id = "tok_" + secrets.token_hex(6)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_tokens (token_id, token_hash, posts, hq, label) VALUES ($1,$2,$3,$4,$5)",
        token_id,
        hash_token(token),
        sorted(set(posts)),
        hq,
        label,
    )
    return token_id, token


async def list_tokens(conn: asyncpg.Connection) -> list[TokenInfo]:
    rows = await conn.fetch(
        "SELECT token_id, posts, hq, label, created_at, revoked_at FROM api_tokens"
        " ORDER BY created_at"
    )
    return [
        TokenInfo(
            r["token_id"], list(r["posts"]), r["hq"], r["label"], r["created_at"], r["revoked_at"]
        )
        for r in rows
    ]


async def revoke_token(conn: asyncpg.Connection, token_id: str) -> bool:
    status = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL",
        token_id,
    )
    return status.endswith(" 1")


async def resolve_token(conn: asyncpg.Connection, token: str) -> Scope | None:
    row = await conn.fetchrow(
        "SELECT token_id, posts, hq FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        hash_token(token),
    )
    if row is None:
        return None
    return Scope(row["token_id"], frozenset(row["posts"]), row["hq"])


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
