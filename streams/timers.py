"""Timers: find deadlines that have passed and send a command into the worker's own stream.

A timer never changes state itself. For the partitions this processor owns, it reads the
cases whose next deadline (escalation, referral, reminder: ``handlers.clocks``) has passed
(and the claims that have stalled) and publishes ``garda.deadline.due`` /
``garda.referral.due`` / ``garda.claim.stalled`` commands keyed by worker_id to the
internal commands topic, which has the same partition count and so reaches this same
processor, in order with that worker's other events. The handler re-checks the command
against the current state, so duplicated or stale commands change nothing; command ids are
derived from (case, clock, level, deadline), so the database dedups repeats too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from handlers.claims import stall_due
from handlers.clocks import due_commands
from handlers.model import Case, Claim, iso
from infra.logging import get_logger
from schemas import topics
from schemas.envelope import encode, new_envelope

log = get_logger("garda.timers")

TIMER_SOURCE = "garda/timer"
RESEND_AFTER = 15.0  # seconds before a command still due is sent again (lost or slow)


class DeadlineTimer:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._sent: dict[str, float] = {}
        self.fired = 0

    def _fresh(self, command_id: str) -> bool:
        now = time.monotonic()
        last = self._sent.get(command_id)
        if last is not None and now - last < RESEND_AFTER:
            return False
        self._sent[command_id] = now
        return True

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - 10 * RESEND_AFTER
        for k in [k for k, t in self._sent.items() if t < cutoff]:
            del self._sent[k]

    async def tick(self, partitions: Iterable[int]) -> int:
        """One scan over the given partitions; returns the number of commands sent."""
        parts = sorted(set(partitions))
        if not parts:
            return 0
        now = datetime.now(UTC)
        rt = self.runtime
        async with rt.db.pool.acquire() as conn:
            case_rows = await conn.fetch(
                "SELECT doc FROM cases WHERE partition = ANY($1) AND next_due <= $2"
                " ORDER BY next_due LIMIT 5000",
                parts,
                now,
            )
            claim_rows = await conn.fetch(
                "SELECT doc FROM claims WHERE partition = ANY($1) AND stall_due <= $2"
                " ORDER BY stall_due LIMIT 5000",
                parts,
                now,
            )
        commands: list[tuple[str, str, dict[str, Any]]] = []
        cases = [Case.from_doc(r["doc"]) for r in case_rows]
        commands.extend(due_commands(cases, rt.policy, now))  # every case clock (handlers.clocks)
        for r in claim_rows:
            claim = Claim.from_doc(r["doc"])
            due = stall_due(claim, rt.policy)
            if due is None or due > now:
                continue
            last = claim.last_change_at or claim.filed_at
            data: dict[str, Any] = {
                "claim_id": claim.claim_id,
                "worker_id": claim.worker_id,
                "last_change_at": iso(last),
            }
            commands.append(("garda.claim.stalled", f"stalled:{claim.claim_id}:{iso(last)}", data))
        sent = 0
        topic = rt.settings.topic(topics.COMMANDS)
        for type_, cid, data in commands:
            if not self._fresh(cid):
                continue
            # A fresh id per send: commands are made idempotent by the state they are checked
            # against (a level fires once), not by their id, so that a command judged early
            # (clock skew between workers) never blocks the ones sent after it.
            env = new_envelope(
                type=type_,
                subject=data["worker_id"],
                data=data,
                id=f"{cid}:{uuid.uuid4().hex[:12]}",
                source=TIMER_SOURCE,
                time=now,
            )
            await rt.relay.send_raw(
                topic,
                data["worker_id"].encode(),
                encode(env),
                [("content-type", b"application/cloudevents+json")],
            )
            log.info(
                "deadline command sent",
                type=type_,
                command_id=cid,
                worker_id=data["worker_id"],
                due_at=data.get("due_at"),
            )
            sent += 1
        self.fired += sent
        self._forget_old()
        return sent
