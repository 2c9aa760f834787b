"""Delivery rows, written in the transaction that raised the alerts.

``Hooks.enqueue(conn, outbox_rows)`` runs inside the processor's batch transaction right
after ``write_batch``: for every alert of the batch (``pmi.alerts.v1`` rows, plus
``garda.case.opened`` case events, so a receiver can be told of every new critical case) and
every matching receiver it records the alert (``hook_alerts``: queued, held or silenced,
with why) and creates or joins a pending delivery (``hook_deliveries``). A crash before the
commit loses both the alert and its deliveries, and the replay raises them again; after the
commit the dispatcher finds them. Nothing is sent from the stream processor's path.

Rules decided where the design is silent:
- Delivery ids are derived from (receiver, first alert id), so a re-run writes nothing twice.
- An alert of a case joins the case's pending delivery to the same receiver while that
  delivery waits out the receiver's ``group_window`` (never after its first attempt);
  otherwise it opens a new delivery due after ``group_window`` (immediately when 0).
- Garda's own alerts raised outside the processor (``receiver-disabled``,
  ``silence-expired``) go through ``raise_alert``: an outbox row on ``pmi.alerts.v1`` and
  their deliveries, in the caller's transaction. Their ``post_id`` is headquarters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from infra import metrics
from infra.hooks.matching import (
    ActiveSilence,
    CriticalCase,
    Facts,
    decide,
    matcher_from_doc,
)
from infra.hooks.policy import HooksPolicy
from infra.hooks.receivers import Receivers
from infra.store import OutboxRow, encode_headers
from schemas import topics
from schemas.envelope import GARDA_SOURCE, Envelope, encode

NOTIFY_CHANNEL = "garda_hooks"
CASE_OPENED = "garda.case.opened"


def delivery_id_for(receiver: str, alert_id: str) -> str:
    return "dlv_" + hashlib.sha256(f"{receiver}\x1f{alert_id}".encode()).hexdigest()[:24]


async def active_silences(conn: asyncpg.Connection) -> list[ActiveSilence]:
    rows = await conn.fetch(
        "SELECT silence_id, matchers, reason, ends_at FROM hook_silences"
        " WHERE starts_at <= now() AND ends_at > now() AND expired_at IS NULL"
    )
    return [
        ActiveSilence(
            r["silence_id"],
            matcher_from_doc(_json(r["matchers"]), f"silence {r['silence_id']}"),
            r["reason"],
            r["ends_at"],
        )
        for r in rows
    ]


async def open_critical_cases(
    conn: asyncpg.Connection, worker_ids: Sequence[str]
) -> dict[str, list[CriticalCase]]:
    if not worker_ids:
        return {}
    rows = await conn.fetch(
        "SELECT case_id, worker_id, post_id, kind, escalation_level,"
        "       doc->>'escalated_to' AS escalated_to"
        " FROM cases WHERE worker_id = ANY($1) AND severity = 'critical'"
        "   AND status <> 'resolved'",
        list(worker_ids),
    )
    out: dict[str, list[CriticalCase]] = {}
    for r in rows:
        posts = frozenset(p for p in (r["post_id"], r["escalated_to"]) if p)
        facts = Facts(
            type=CASE_OPENED,
            posts=posts,
            severity="critical",
            kind=r["kind"],
            level=r["escalation_level"],
            case_id=r["case_id"],
            worker_id=r["worker_id"],
        )
        out.setdefault(r["worker_id"], []).append(CriticalCase(r["case_id"], facts))
    return out


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


class Hooks:
    """The receivers and the hooks policy of this process, and the enqueue step."""

    def __init__(
        self, receivers: Receivers, policy: HooksPolicy, *, topic_prefix: str = ""
    ) -> None:
        self.receivers = receivers
        self.policy = policy
        self.alerts_topic = f"{topic_prefix}{topics.ALERTS}"
        self.cases_topic = f"{topic_prefix}{topics.CASES}"

    def alert_events(self, rows: Sequence[OutboxRow]) -> list[dict[str, Any]]:
        """The alerts among a batch's outbox rows, as CloudEvent dicts."""
        out = []
        for r in rows:
            if r.topic == self.alerts_topic or (
                r.topic == self.cases_topic and CASE_OPENED.encode() in r.value
            ):
                ev = json.loads(r.value)
                if r.topic == self.alerts_topic or ev.get("type") == CASE_OPENED:
                    out.append(ev)
        return out

    async def enqueue(self, conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> int:
        """Record this batch's alerts for every matching receiver; returns deliveries created."""
        if not len(self.receivers):
            return 0
        events = self.alert_events(rows)
        if not events:
            return 0
        return await self.enqueue_events(conn, events)

    async def enqueue_events(self, conn: asyncpg.Connection, events: Sequence[Mapping]) -> int:
        facts = [Facts.of(e) for e in events]
        wanted = [(e, f, self.receivers.matching(f)) for e, f in zip(events, facts, strict=True)]
        wanted = [w for w in wanted if w[2]]
        if not wanted:
            return 0
        silences = await active_silences(conn)
        critical = await open_critical_cases(
            conn, sorted({f.worker_id for _, f, _ in wanted if f.worker_id})
        )
        created = 0
        for event, f, receivers in wanted:
            for rcv in receivers:
                d = decide(
                    f,
                    rcv.name,
                    rcv.match,
                    silences=silences,
                    never_mute=self.policy.never_mute,
                    open_critical=critical.get(f.worker_id or "", ()),
                )
                delivery_id = None
                if d.action != "queued":
                    metrics.record_delivery(rcv.name, d.action)
                if d.action == "queued":
                    delivery_id, new = await self._delivery_for(conn, rcv, f, str(event["id"]))
                    created += new
                await conn.execute(
                    """INSERT INTO hook_alerts (receiver, alert_id, alert_type, worker_id,
                           case_id, severity, event, disposition, reason, delivery_id,
                           inhibited_by, silence_id, created_at)
                       VALUES ($1,$2,$3,$4,$5,$6,$7::text::jsonb,$8,$9,$10,$11,$12,
                               clock_timestamp())
                       ON CONFLICT DO NOTHING""",
                    rcv.name,
                    str(event["id"]),
                    f.type,
                    f.worker_id,
                    f.case_id,
                    f.severity,
                    json.dumps(event, default=str),
                    d.action,
                    d.reason,
                    delivery_id,
                    d.inhibited_by,
                    d.silence_id,
                )
        if created:
            await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        return created

    async def _delivery_for(
        self, conn: asyncpg.Connection, rcv: Any, f: Facts, alert_id: str
    ) -> tuple[str, int]:
        window = rcv.group_window.total_seconds()
        group_key = f.case_id or alert_id
        if window > 0 and f.case_id:
            slot = await conn.fetchval(
                """SELECT delivery_id FROM hook_deliveries
                   WHERE receiver = $1 AND group_key = $2 AND status = 'pending'
                     AND attempts = 0 AND next_attempt_at > clock_timestamp()
                   ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED""",
                rcv.name,
                group_key,
            )
            if slot is not None:
                return slot, 0
        delivery_id = delivery_id_for(rcv.name, alert_id)
        status = await conn.execute(
            """INSERT INTO hook_deliveries (delivery_id, receiver, group_key, worker_id,
                   case_id, next_attempt_at)
               VALUES ($1,$2,$3,$4,$5, clock_timestamp() + make_interval(secs => $6))
               ON CONFLICT DO NOTHING""",
            delivery_id,
            rcv.name,
            group_key,
            f.worker_id,
            f.case_id,
            window,
        )
        return delivery_id, int(status.endswith(" 1"))


async def raise_alert(
    conn: asyncpg.Connection,
    hooks: Hooks,
    *,
    kind: str,
    event_id: str,
    subject: str,
    data: dict[str, Any],
) -> None:
    """Raise one of Garda's own ``garda.alert.<kind>`` (outbox row + deliveries), once."""
    env = Envelope(
        id=event_id,
        source=GARDA_SOURCE,
        type=f"garda.alert.{kind}",
        subject=subject,
        data={"alert": kind, **data},
        time=datetime.now(UTC),
    )
    value = encode(env)
    inserted = await conn.fetchval(
        """INSERT INTO outbox (event_id, topic, key, value, headers)
           VALUES ($1, $2, $3, $4, $5::text::jsonb) ON CONFLICT (event_id) DO NOTHING RETURNING seq""",
        f"{topics.ALERTS}:{event_id}",
        hooks.alerts_topic,
        subject.encode(),
        value,
        json.dumps(encode_headers([("content-type", b"application/cloudevents+json")])),
    )
    if inserted is not None:
        await hooks.enqueue_events(conn, [json.loads(value)])
