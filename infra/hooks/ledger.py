"""The escalation ledger of a case: who was told, when it reached them, when they acknowledged.

Built from ``hook_deliveries`` (notified: the row, written in the transaction that raised
the alert), ``hook_attempts`` (every try, with its answer) and ``hook_ack_links`` (the
acknowledge link of the delivery, and when it was used). ``GET
/api/cases/{case_id}/deliveries`` serves it; the desk shows it on the case page.

Rules decided where the design is silent:
- One entry per delivery that lists an alert of the case (its own, or one it released
  after inhibition), oldest first. ``seconds_to_deliver`` counts from notified to the
  receiver's 2xx; ``seconds_to_acknowledge`` from that 2xx to the use of the delivery's link
  (null while either is missing). An acknowledgement made elsewhere (the desk, the API) is
  the case's ``acknowledged_at``, reported beside the entries, not inside them.
- Alerts of the case that were held (inhibition) or silenced are listed too, with why:
  nobody was told of them, and the ledger says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

DELIVERIES = """
SELECT d.delivery_id, d.receiver, d.status, d.attempts, d.created_at, d.first_sent_at,
       d.delivered_at, d.last_error,
       l.expires_at AS ack_expires_at, l.used_at AS ack_used_at, l.actor AS ack_actor,
       l.used_event_id AS ack_event_id
  FROM hook_deliveries d
  LEFT JOIN hook_ack_links l ON l.delivery_id = d.delivery_id AND l.case_id = $1
 WHERE d.case_id = $1
    OR d.delivery_id IN (SELECT delivery_id FROM hook_alerts
                          WHERE case_id = $1 AND delivery_id IS NOT NULL)
 ORDER BY d.created_at, d.delivery_id
"""

ATTEMPTS = """
SELECT delivery_id, attempt, dispatcher, started_at, latency_ms, status_code, error, outcome
  FROM hook_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY delivery_id, attempt
"""

ALERTS = """
SELECT receiver, alert_id, alert_type, severity, disposition, reason, delivery_id,
       inhibited_by, silence_id, created_at
  FROM hook_alerts WHERE case_id = $1 OR delivery_id = ANY($2::text[])
 ORDER BY created_at, alert_id
"""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


async def case_ledger(conn: asyncpg.Connection, case_id: str) -> dict[str, Any]:
    """The ledger of one case (see the module docstring); the caller checks access."""
    rows = await conn.fetch(DELIVERIES, case_id)
    ids = [r["delivery_id"] for r in rows]
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in await conn.fetch(ATTEMPTS, ids):
        attempts.setdefault(a["delivery_id"], []).append(
            {
                "attempt": a["attempt"],
                "started_at": _iso(a["started_at"]),
                "status_code": a["status_code"],
                "latency_ms": a["latency_ms"],
                "outcome": a["outcome"],
                "error": a["error"],
                "dispatcher": a["dispatcher"],
            }
        )
    alerts = await conn.fetch(ALERTS, case_id, ids)
    by_delivery: dict[str, list[dict[str, Any]]] = {}
    unsent: list[dict[str, Any]] = []
    for a in alerts:
        item = {
            "alert_id": a["alert_id"],
            "type": a["alert_type"],
            "severity": a["severity"],
            "disposition": a["disposition"],
        }
        if a["delivery_id"] is not None:
            by_delivery.setdefault(a["delivery_id"], []).append(item)
        else:
            unsent.append(
                {
                    **item,
                    "receiver": a["receiver"],
                    "reason": a["reason"],
                    "inhibited_by": a["inhibited_by"],
                    "silence_id": a["silence_id"],
                    "at": _iso(a["created_at"]),
                }
            )
    entries = []
    for r in rows:
        did = r["delivery_id"]
        ack = None
        if r["ack_expires_at"] is not None:
            ack = {
                "expires_at": _iso(r["ack_expires_at"]),
                "used_at": _iso(r["ack_used_at"]),
                "actor": r["ack_actor"],
                "event_id": r["ack_event_id"],
            }
        entries.append(
            {
                "delivery_id": did,
                "receiver": r["receiver"],
                "status": r["status"],
                "notified_at": _iso(r["created_at"]),
                "first_sent_at": _iso(r["first_sent_at"]),
                "delivered_at": _iso(r["delivered_at"]),
                "acknowledged_at": _iso(r["ack_used_at"]),
                "seconds_to_deliver": _seconds(r["created_at"], r["delivered_at"]),
                "seconds_to_acknowledge": _seconds(r["delivered_at"], r["ack_used_at"]),
                "attempts": attempts.get(did, []),
                "alerts": by_delivery.get(did, []),
                "ack_link": ack,
                "last_error": r["last_error"],
            }
        )
    case = await conn.fetchrow(
        "SELECT status, doc->>'acknowledged_at' AS acknowledged_at FROM cases WHERE case_id = $1",
        case_id,
    )
    return {
        "case_id": case_id,
        "case_status": case["status"] if case else None,
        "case_acknowledged_at": case["acknowledged_at"] if case else None,
        "deliveries": entries,
        "not_sent": unsent,
    }
