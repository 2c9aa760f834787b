"""Acknowledge links: ``ack_url`` of a case alert, single-case, single-use, expiring, signed.

The token is ``base64url("<delivery_id>.<case_id>.<expires unix>")`` + ``.`` +
``base64url(HMAC-SHA256(key, payload))``; the key is made once per database
(``hook_keys``), so every worker checks every link. The ``hook_ack_links`` row makes a link
single-use (``used_at``) and records who used it and when (delivered → acknowledged).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from errors import GardaError

KEY_NAME = "ack-link"


class AckLinkError(GardaError):
    """A link that is forged, malformed, expired or already used."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class AckLink:
    delivery_id: str
    case_id: str
    expires_at: datetime

    @property
    def link_id(self) -> str:
        return f"{self.delivery_id}:{self.case_id}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def signing_key(conn: asyncpg.Connection) -> bytes:
    await conn.execute(
        "INSERT INTO hook_keys (name, key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        KEY_NAME,
        secrets.token_bytes(32),
    )
    return bytes(await conn.fetchval("SELECT key FROM hook_keys WHERE name = $1", KEY_NAME))


def make_token(key: bytes, link: AckLink) -> str:
    payload = f"{link.delivery_id}.{link.case_id}.{int(link.expires_at.timestamp())}".encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def read_token(key: bytes, token: str, now: datetime | None = None) -> AckLink:
    """The link a token stands for; AckLinkError if forged, malformed or expired."""
    now = now or datetime.now(UTC)
    try:
        p64, m64 = token.split(".")
        payload, mac = _unb64(p64), _unb64(m64)
    except ValueError:
        raise AckLinkError("malformed acknowledge link", 404) from None
    if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        raise AckLinkError("this acknowledge link is not valid", 404)
    delivery_id, case_id, exp = payload.decode().split(".")
    link = AckLink(delivery_id, case_id, datetime.fromtimestamp(int(exp), UTC))
    if link.expires_at <= now:
        raise AckLinkError("this acknowledge link has expired", 410)
    return link


async def create_link(
    conn: asyncpg.Connection,
    key: bytes,
    *,
    delivery_id: str,
    case_id: str,
    receiver: str,
    ttl: timedelta,
    now: datetime | None = None,
) -> str:
    """Record a link for this delivery and case (once) and return its token."""
    now = now or datetime.now(UTC)
    expires = await conn.fetchval(
        """INSERT INTO hook_ack_links (link_id, case_id, delivery_id, receiver, expires_at)
           VALUES ($1,$2,$3,$4,$5)
           ON CONFLICT (link_id) DO UPDATE SET link_id = EXCLUDED.link_id
           RETURNING expires_at""",
        f"{delivery_id}:{case_id}",
        case_id,
        delivery_id,
        receiver,
        (now + ttl).replace(microsecond=0),
    )
    return make_token(key, AckLink(delivery_id, case_id, expires))


async def claim_use(conn: asyncpg.Connection, link: AckLink, actor: str, event_id: str) -> bool:
    """Mark the link used (atomically); False if it was used before."""
    status = await conn.execute(
        "UPDATE hook_ack_links SET used_at = now(), actor = $2, used_event_id = $3"
        " WHERE link_id = $1 AND used_at IS NULL",
        link.link_id,
        actor,
        event_id,
    )
    return status.endswith(" 1")


async def release_use(conn: asyncpg.Connection, link: AckLink) -> None:
    """Undo ``claim_use`` when the acknowledgement could not be published."""
    await conn.execute(
        "UPDATE hook_ack_links SET used_at = NULL, actor = NULL, used_event_id = NULL"
        " WHERE link_id = $1",
        link.link_id,
    )
