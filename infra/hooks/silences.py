"""Silences: a matcher, an author, a reason and an expiry; audited; expire with a notice.

Rules decided where the design is silent:
- A silence needs at least one matcher field (nothing silences everything by accident), an
  author, a reason, and an end in the future, at most 30 days away.
- Silenced alerts are recorded (``hook_alerts.disposition = 'silenced'``, with the silence)
  and never sent later: a silence means "we know". When a silence ends (its time, or
  ``garda silences expire``), the dispatcher raises ``garda.alert.silence-expired`` once, to
  headquarters, with how many alerts it silenced.
- Alerts the policy lists in ``[[hooks.never_mute]]`` go through every silence.
- Every add and expire is written to ``audit_log`` (the CLI as ``cli:<author>``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from errors import ConfigError
from infra.hooks.matching import Matcher, matcher_from_doc

MAX_SILENCE = timedelta(days=30)


@dataclass(frozen=True)
class Silence:
    silence_id: str
    matcher: Matcher
    starts_at: datetime
    ends_at: datetime
    author: str
    reason: str
    expired_at: datetime | None
    expired_by: str | None
    silenced: int = 0

    def active(self, now: datetime) -> bool:
        return self.expired_at is None and self.starts_at <= now < self.ends_at

    def public(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        return {
            "silence_id": self.silence_id,
            "matchers": self.matcher.to_doc(),
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "author": self.author,
            "reason": self.reason,
            "expired_at": self.expired_at.isoformat() if self.expired_at else None,
            "expired_by": self.expired_by,
            "active": self.active(now),
            "silenced_alerts": self.silenced,
        }


def check_new(matcher: Matcher, until: datetime, author: str, reason: str, now: datetime) -> None:
    if matcher.empty:
        raise ConfigError("a silence needs at least one matcher (e.g. --matcher post=KBRI-…)")
    if not author.strip():
        raise ConfigError("a silence needs an author")
    if not reason.strip():
        raise ConfigError("a silence needs a reason")
    if until.tzinfo is None:
        raise ConfigError("the end of a silence needs a time zone (e.g. 2026-12-01T18:00Z)")
    if until <= now:
        raise ConfigError("the end of a silence must be in the future")
    if until - now > MAX_SILENCE:
        raise ConfigError(f"a silence lasts at most {MAX_SILENCE.days} days")


def parse_until(text: str, now: datetime | None = None) -> datetime:
    """``2026-12-01T18:00:00Z`` or a duration from now (``90m``, ``2h``, ``3d``)."""
    from handlers.policy import parse_duration

    now = now or datetime.now(UTC)
    text = text.strip()
    if text and text[-1] in "smhd" and text[:-1].isdigit():
        return now + parse_duration(text, "--until")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--until {text!r}: expected an ISO time or a duration (2h)") from None
    if when.tzinfo is None:
        raise ConfigError(f"--until {text!r}: give a time zone (Z or +07:00)")
    return when


async def add_silence(
    conn: asyncpg.Connection,
    matcher: Matcher,
    *,
    until: datetime,
    author: str,
    reason: str,
    token_id: str | None = None,
    via: str = "cli",
) -> Silence:
    now = datetime.now(UTC)
    check_new(matcher, until, author, reason, now)
    silence_id = "sil_" + secrets.token_hex(6)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO hook_silences (silence_id, matchers, ends_at, author, reason)"
            " VALUES ($1, $2::text::jsonb, $3, $4, $5)",
            silence_id,
            json.dumps(matcher.to_doc()),
            until,
            author,
            reason,
        )
        await _audit(conn, token_id, "silence.add", silence_id, via, author, reason, matcher)
    found = await get_silence(conn, silence_id)
    assert found is not None
    return found


async def expire_silence(
    conn: asyncpg.Connection,
    silence_id: str,
    *,
    by: str,
    token_id: str | None = None,
    via: str = "cli",
) -> Silence | None:
    """End a silence now; None if unknown or already over."""
    async with conn.transaction():
        status = await conn.execute(
            "UPDATE hook_silences SET expired_at = now(), expired_by = $2"
            " WHERE silence_id = $1 AND expired_at IS NULL AND ends_at > now()",
            silence_id,
            by,
        )
        if not status.endswith(" 1"):
            return None
        await _audit(conn, token_id, "silence.expire", silence_id, via, by, None, None)
    return await get_silence(conn, silence_id)


async def _audit(
    conn: asyncpg.Connection,
    token_id: str | None,
    action: str,
    silence_id: str,
    via: str,
    author: str,
    reason: str | None,
    matcher: Matcher | None,
) -> None:
    detail: dict[str, Any] = {"action": action, "silence_id": silence_id, "author": author}
    if reason is not None:
        detail["reason"] = reason
    if matcher is not None:
        detail["matchers"] = matcher.to_doc()
    await conn.execute(
        "INSERT INTO audit_log (token_id, method, path, status, detail)"
        " VALUES ($1, $2, $3, 200, $4::text::jsonb)",
        token_id,
        "CLI" if via == "cli" else "POST",
        f"/api/silences/{silence_id}" if action == "silence.expire" else "/api/silences",
        json.dumps(detail),
    )


_SELECT = """SELECT s.*, (SELECT count(*) FROM hook_alerts a WHERE a.silence_id = s.silence_id)
             AS silenced FROM hook_silences s"""


def _silence(r: Any) -> Silence:
    m = r["matchers"]
    return Silence(
        r["silence_id"],
        matcher_from_doc(json.loads(m) if isinstance(m, str) else m, r["silence_id"]),
        r["starts_at"],
        r["ends_at"],
        r["author"],
        r["reason"],
        r["expired_at"],
        r["expired_by"],
        r["silenced"],
    )


async def get_silence(conn: asyncpg.Connection, silence_id: str) -> Silence | None:
    r = await conn.fetchrow(_SELECT + " WHERE s.silence_id = $1", silence_id)
    return _silence(r) if r else None


async def list_silences(conn: asyncpg.Connection, *, include_over: bool = False) -> list[Silence]:
    where = "" if include_over else " WHERE s.expired_at IS NULL AND s.ends_at > now()"
    rows = await conn.fetch(_SELECT + where + " ORDER BY s.created_at")
    return [_silence(r) for r in rows]
