"""The dispatcher: an asyncio task in every worker that sends due deliveries.

A round claims up to ``batch`` due deliveries in one short transaction (``FOR UPDATE SKIP
LOCKED``, then a lease: ``attempts + 1``, ``lease_until``), so several workers never claim
the same attempt; the HTTP requests run outside any transaction; each answer is recorded in
its own transaction (the attempt row, then the delivery: delivered, retry at, failed) only if
this dispatcher still holds the lease. A dispatcher killed mid-request leaves an
``in_flight`` attempt and a lease that expires (timeout + 15 s); the next claim marks that
attempt ``lost`` and tries again under the same ``webhook-id``. A killed dispatcher mid-backoff
loses nothing: the backoff is ``next_attempt_at`` in the row.

Rules decided where the design is silent:
- Only 2xx is success. 410 disables the receiver (``hook_receivers``), raises
  ``garda.alert.receiver-disabled`` to headquarters once, and leaves its deliveries pending
  (they go out if an operator re-enables it: ``garda hooks enable``). Any other answer, a
  timeout or a connection error retries per the policy's schedule.
- Deliveries to a receiver no longer in the file stay pending (and are listed), never dropped.
- Housekeeping, at most once a second: expired silences raise ``garda.alert.silence-expired``
  (once: ``noticed_at``); held alerts whose critical case is resolved (or no longer critical)
  go out in a delivery of their own.
- Wake-ups: ``LISTEN garda_hooks`` (the enqueue step notifies on commit), else a poll.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg

from infra import metrics
from infra.db import Database
from infra.hooks import stats
from infra.hooks.acklinks import create_link, signing_key
from infra.hooks.enqueue import NOTIFY_CHANNEL, Hooks, delivery_id_for, raise_alert
from infra.hooks.matching import next_attempt, parse_retry_after
from infra.hooks.receivers import Receiver
from infra.hooks.signing import alertmanager_body, cloudevent_body, sign
from infra.logging import get_logger, safe_error

log = get_logger("garda.hooks")

CLAIM = """
UPDATE hook_deliveries d
   SET attempts = d.attempts + 1,
       lease_until = clock_timestamp() + make_interval(secs => $1),
       leased_by = $2,
       first_sent_at = coalesce(d.first_sent_at, clock_timestamp())
 WHERE d.delivery_id IN (
       SELECT delivery_id FROM hook_deliveries
        WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
          AND (lease_until IS NULL OR lease_until < clock_timestamp())
          AND receiver = ANY($3::text[])
          AND receiver NOT IN (SELECT name FROM hook_receivers WHERE disabled_at IS NOT NULL)
        ORDER BY next_attempt_at
        LIMIT $4
        FOR UPDATE SKIP LOCKED)
RETURNING d.delivery_id, d.receiver, d.case_id, d.worker_id, d.attempts, d.body, d.created_at
"""


# attempt outcome here -> garda_deliveries_total{outcome} (infra.metrics.DELIVERY_OUTCOMES)
METRIC_OUTCOME = {
    "delivered": "delivered",
    "retry": "failed",
    "failed": "expired",
    "disabled": "disabled",
}


@dataclass
class Claimed:
    delivery_id: str
    receiver: Receiver
    attempt: int
    body: bytes
    created_at: datetime


@dataclass
class Answer:
    status: int | None
    error: str | None
    retry_after: str | None
    seconds: float


class Dispatcher:
    def __init__(
        self,
        db: Database,
        hooks: Hooks,
        *,
        public_url: str,
        headquarters: str,
        name: str | None = None,
        batch: int = 32,
        poll: float = 0.5,
        lease: float | None = None,
    ) -> None:
        self.db = db
        self.hooks = hooks
        self.public_url = public_url.rstrip("/")
        self.headquarters = headquarters
        self.name = name or f"{socket.gethostname()}:{id(self):x}"
        self.batch = batch
        self.poll = poll
        self.lease = lease or hooks.policy.timeout.total_seconds() + 15.0
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._housekept = 0.0
        self._key: bytes | None = None
        self.sent = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> Dispatcher:
        """Ready to send, without the background rounds: the caller runs ``run_once`` and
        ``housekeeping`` itself (tests that drive each round; ``start`` for the loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.hooks.policy.timeout.total_seconds()),
                headers={"User-Agent": "garda-hooks/1"},
            )
        return self

    async def start(self) -> Dispatcher:
        """Open, and run rounds in the background (woken by ``LISTEN``, else polling)."""
        await self.open()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="garda.hooks.dispatcher")
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                await listener.close()
            except Exception:  # noqa: BLE001 - stopping
                pass
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await asyncpg.connect(self.db.url)
            await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        except Exception as exc:  # noqa: BLE001 - polling still works
            self._listener = None
            log.warning("hooks listener unavailable; polling", error=safe_error(exc))

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
                await self.housekeeping()
                n = await self.run_once()
                if n >= self.batch:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - outages: the next round retries
                log.warning("hooks round failed", error=safe_error(exc))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll)
            except TimeoutError:
                pass

    # -- one round -------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Claim due deliveries, send them concurrently, record the answers."""
        claimed = await self._claim()
        if claimed:
            await asyncio.gather(*(self._deliver(c) for c in claimed))
        return len(claimed)

    async def _claim(self) -> list[Claimed]:
        names = self.hooks.receivers.names
        if not names:
            return []
        out: list[Claimed] = []
        async with self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM, self.lease, self.name, names, self.batch)
            for r in rows:
                rcv = self.hooks.receivers.get(r["receiver"])
                assert rcv is not None
                await conn.execute(
                    "UPDATE hook_attempts SET outcome = 'lost',"
                    " error = 'no answer recorded: the dispatcher stopped mid-request'"
                    " WHERE delivery_id = $1 AND outcome = 'in_flight'",
                    r["delivery_id"],
                )
                body = r["body"]
                if body is None:
                    body = await self._build_body(conn, r, rcv)
                await conn.execute(
                    "INSERT INTO hook_attempts (delivery_id, attempt, dispatcher, started_at,"
                    " outcome) VALUES ($1, $2, $3, clock_timestamp(), 'in_flight')",
                    r["delivery_id"],
                    r["attempts"],
                    self.name,
                )
                out.append(
                    Claimed(r["delivery_id"], rcv, r["attempts"], bytes(body), r["created_at"])
                )
        return out

    async def _build_body(self, conn: asyncpg.Connection, r: Any, rcv: Receiver) -> bytes:
        """Fix the delivery's content at its first attempt (held alerts join it here)."""
        if r["case_id"]:
            await conn.execute(
                """UPDATE hook_alerts SET delivery_id = $1,
                       reason = reason || '; released with delivery ' || $1
                   WHERE receiver = $2 AND inhibited_by = $3 AND disposition = 'held'
                     AND delivery_id IS NULL""",
                r["delivery_id"],
                rcv.name,
                r["case_id"],
            )
        rows = await conn.fetch(
            "SELECT event, disposition FROM hook_alerts WHERE delivery_id = $1"
            " ORDER BY created_at, alert_id",
            r["delivery_id"],
        )
        alerts = [_doc(x["event"]) for x in rows if x["disposition"] == "queued"]
        held = [_doc(x["event"]) for x in rows if x["disposition"] == "held"]
        if not alerts:
            alerts, held = held, []
        ack_url = None
        if r["case_id"]:
            if self._key is None:
                self._key = await signing_key(conn)
            token = await create_link(
                conn,
                self._key,
                delivery_id=r["delivery_id"],
                case_id=r["case_id"],
                receiver=rcv.name,
                ttl=self.hooks.policy.ack_link_ttl,
            )
            ack_url = f"{self.public_url}/ack/{token}"
        if rcv.type == "alertmanager":
            case_url = f"{self.public_url}/api/cases/{r['case_id']}" if r["case_id"] else None
            body = alertmanager_body(alerts, held, ack_url, case_url)
        else:
            body = cloudevent_body(r["delivery_id"], rcv.name, alerts, held, ack_url)
        await conn.execute(
            "UPDATE hook_deliveries SET body = $2 WHERE delivery_id = $1", r["delivery_id"], body
        )
        return body

    async def _post(self, c: Claimed) -> Answer:
        assert self._session is not None
        rcv = c.receiver
        if rcv.type == "alertmanager":
            headers = {"Content-Type": "application/json"}
        else:
            headers = {"Content-Type": "application/cloudevents+json"}
            headers.update(sign(rcv.secret or "", c.delivery_id, c.body))
        t0 = time.monotonic()
        try:
            async with self._session.post(rcv.endpoint, data=c.body, headers=headers) as resp:
                await resp.read()
                return Answer(
                    resp.status, None, resp.headers.get("Retry-After"), time.monotonic() - t0
                )
        except TimeoutError:
            limit = self.hooks.policy.timeout.total_seconds()
            return Answer(None, f"timeout after {limit:g} s", None, time.monotonic() - t0)
        except aiohttp.ClientError as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}", None, time.monotonic() - t0)

    async def _deliver(self, c: Claimed) -> None:
        ans = await self._post(c)
        now = datetime.now(UTC)
        ok = ans.status is not None and 200 <= ans.status < 300
        error = ans.error or (None if ok else f"HTTP {ans.status}")
        if ok:
            outcome = "delivered"
        elif ans.status == 410:
            outcome = "disabled"
        else:
            plan = next_attempt(
                self.hooks.policy.retry,
                attempts_done=c.attempt,
                created_at=c.created_at,
                now=now,
                retry_after=parse_retry_after(ans.retry_after, now),
                rand=random.random(),
            )
            outcome = "retry" if plan.at is not None else "failed"
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE hook_attempts SET latency_ms = $3, status_code = $4, error = $5,"
                " outcome = $6 WHERE delivery_id = $1 AND attempt = $2",
                c.delivery_id,
                c.attempt,
                ans.seconds * 1000.0,
                ans.status,
                error,
                outcome,
            )
            guard = "delivery_id = $1 AND attempts = $2 AND leased_by = $3"
            args = (c.delivery_id, c.attempt, self.name)
            if outcome == "delivered":
                done = await conn.fetchval(
                    "UPDATE hook_deliveries SET status = 'delivered', delivered_at = now(),"
                    f" lease_until = NULL, last_error = NULL WHERE {guard}"
                    " RETURNING extract(epoch FROM clock_timestamp() - created_at)",
                    *args,
                )
            elif outcome == "disabled":
                done = None
                await conn.execute(
                    "UPDATE hook_deliveries SET lease_until = NULL, next_attempt_at = now(),"
                    f" last_error = $4 WHERE {guard}",
                    *args,
                    "the receiver answered 410 Gone: disabled",
                )
                await self._disable(conn, c.receiver.name, f"answered 410 to {c.delivery_id}")
            elif outcome == "retry":
                done = None
                await conn.execute(
                    "UPDATE hook_deliveries SET lease_until = NULL, next_attempt_at = $4,"
                    f" last_error = $5 WHERE {guard}",
                    *args,
                    plan.at,
                    error,
                )
            else:
                done = None
                await conn.execute(
                    "UPDATE hook_deliveries SET status = 'failed', lease_until = NULL,"
                    f" last_error = $4 WHERE {guard}",
                    *args,
                    f"{error}; {plan.reason}",
                )
        self.sent += 1
        latency = float(done) if done else None
        stats.record(c.receiver.name, outcome, ans.seconds, latency)
        metrics.record_delivery(c.receiver.name, METRIC_OUTCOME[outcome], latency)
        log.info(
            "hook attempt",
            delivery_id=c.delivery_id,
            receiver=c.receiver.name,
            attempt=c.attempt,
            outcome=outcome,
            status=ans.status,
            error=error,
            ms=round(ans.seconds * 1000, 1),
        )

    async def _disable(self, conn: asyncpg.Connection, name: str, reason: str) -> None:
        at = await conn.fetchval(
            """INSERT INTO hook_receivers (name, disabled_at, disabled_reason) VALUES ($1, now(), $2)
               ON CONFLICT (name) DO UPDATE SET disabled_at = now(), disabled_reason = $2,
                   updated_at = now()
               WHERE hook_receivers.disabled_at IS NULL
               RETURNING disabled_at""",
            name,
            reason,
        )
        if at is None:
            return  # already disabled: told once
        log.warning("hook receiver disabled", receiver=name, reason=reason)
        await raise_alert(
            conn,
            self.hooks,
            kind="receiver-disabled",
            event_id=f"receiver-disabled:{name}:{at.isoformat()}",
            subject=name,
            data={
                "receiver": name,
                "reason": reason,
                "disabled_at": at.isoformat(),
                "post_id": self.headquarters,
                "severity": "high",
            },
        )

    # -- housekeeping ----------------------------------------------------------------------
    async def housekeeping(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._housekept < 1.0:
            return
        self._housekept = now
        async with self.db.pool.acquire() as conn, conn.transaction():
            expired = await conn.fetch(
                """UPDATE hook_silences SET noticed_at = now()
                   WHERE silence_id IN (
                       SELECT silence_id FROM hook_silences
                        WHERE noticed_at IS NULL
                          AND least(ends_at, coalesce(expired_at, ends_at)) <= now()
                        FOR UPDATE SKIP LOCKED)
                   RETURNING silence_id, matchers, author, reason, ends_at, expired_at,
                             expired_by"""
            )
            for s in expired:
                count = await conn.fetchval(
                    "SELECT count(*) FROM hook_alerts WHERE silence_id = $1", s["silence_id"]
                )
                log.info("silence expired", silence_id=s["silence_id"], silenced=count)
                await raise_alert(
                    conn,
                    self.hooks,
                    kind="silence-expired",
                    event_id=f"silence-expired:{s['silence_id']}",
                    subject=s["silence_id"],
                    data={
                        "silence_id": s["silence_id"],
                        "matchers": _doc(s["matchers"]),
                        "author": s["author"],
                        "reason": s["reason"],
                        "ends_at": (s["expired_at"] or s["ends_at"]).isoformat(),
                        "expired_by": s["expired_by"],
                        "silenced_alerts": count,
                        "post_id": self.headquarters,
                    },
                )
            await self._release_held(conn)

    async def _release_held(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            """SELECT a.receiver, a.alert_id, a.inhibited_by, a.worker_id FROM hook_alerts a
               LEFT JOIN cases c ON c.case_id = a.inhibited_by
               WHERE a.disposition = 'held' AND a.delivery_id IS NULL
                 AND (c.case_id IS NULL OR c.status = 'resolved' OR c.severity <> 'critical')
               ORDER BY a.created_at, a.alert_id
               FOR UPDATE OF a SKIP LOCKED"""
        )
        groups: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            groups.setdefault((r["receiver"], r["inhibited_by"]), []).append(r)
        for (receiver, case_id), items in groups.items():
            did = delivery_id_for(receiver, f"released:{case_id}:{items[0]['alert_id']}")
            await conn.execute(
                """INSERT INTO hook_deliveries (delivery_id, receiver, group_key, worker_id,
                       next_attempt_at) VALUES ($1, $2, $3, $4, clock_timestamp())
                   ON CONFLICT DO NOTHING""",
                did,
                receiver,
                f"released:{case_id}",
                items[0]["worker_id"],
            )
            await conn.execute(
                "UPDATE hook_alerts SET delivery_id = $1,"
                " reason = reason || '; released: case ' || $2 || ' no longer open and critical'"
                " WHERE receiver = $3 AND alert_id = ANY($4::text[])",
                did,
                case_id,
                receiver,
                [i["alert_id"] for i in items],
            )
        if groups:
            await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)


def _doc(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value
