"""``garda repolicy``: bring open cases' deadlines in line with the current SLA policy.

Scans the open cases in ``case_id`` order, in chunks (so a national read model never sits in
memory), compares each with what the policy gives (``handlers.repolicy.changes_for``) and
with its stored next escalation deadline, and sends one ``garda.deadlines.recompute``
command per case that differs into the commands topic, keyed by worker: the processor that
owns the worker applies it in order with the worker's other events. Nothing is written to
the database from here. Command ids are derived from the case and the new deadlines, so a
second run before the first is applied sends duplicates the processor drops, and a run after
it finds nothing to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from errors import ConfigError
from handlers.clocks import case_next_due
from handlers.model import Case, iso
from handlers.policy import Policy
from handlers.repolicy import RECOMPUTE, changes_for, command_data, sla_digest
from infra.db import Database
from infra.outbox import OutboxRelay
from infra.settings import Settings
from schemas import topics
from schemas.envelope import encode, new_envelope

SOURCE = "garda/repolicy"
CHUNK = 1000


@dataclass
class Change:
    case_id: str
    worker_id: str
    severity: str
    fields: dict[str, tuple[str | None, str | None]]  # name -> (stored, per policy)


@dataclass
class RepolicyReport:
    scanned: int = 0
    changes: list[Change] = field(default_factory=list)
    sent: int = 0


def plan(case: Case, stored_next_due: datetime | None, policy: Policy) -> Change | None:
    """What would change for one open case, or None."""
    fields: dict[str, tuple[str | None, str | None]] = {
        k: (iso(old), iso(new)) for k, (old, new) in changes_for(case, policy).items()
    }
    new_next = case_next_due(case, policy)
    if not fields and new_next != stored_next_due:
        # Only a level-2 SLA changed: the stored deadlines stay, the next escalation moves.
        fields["next_due"] = (iso(stored_next_due), iso(new_next))
    if not fields:
        return None
    return Change(case.case_id, case.worker_id, case.severity, fields)


async def repolicy(
    settings: Settings,
    policy: Policy,
    *,
    dry_run: bool = False,
    progress: Callable[[RepolicyReport], None] | None = None,
) -> RepolicyReport:
    report = RepolicyReport()
    digest = sla_digest(policy)
    topic = settings.topic(topics.COMMANDS)
    if not settings.database_url:
        raise ConfigError("garda repolicy needs GARDA_DATABASE_URL")
    async with Database(settings.database_url, max_size=2) as db:
        relay = None if dry_run else OutboxRelay(db, settings.kafka_bootstrap)
        if relay is not None:
            await relay.start()
        try:
            after = ""
            while True:
                async with db.pool.acquire() as conn:
                    rows = await conn.fetch(
                        "SELECT case_id, doc, next_due FROM cases"
                        " WHERE status IN ('open', 'acknowledged', 'reopened') AND case_id > $1"
                        " ORDER BY case_id LIMIT $2",
                        after,
                        CHUNK,
                    )
                if not rows:
                    break
                after = rows[-1]["case_id"]
                for row in rows:
                    report.scanned += 1
                    case = Case.from_doc(row["doc"])
                    change = plan(case, row["next_due"], policy)
                    if change is None:
                        continue
                    report.changes.append(change)
                    if relay is None:
                        continue
                    target = ":".join(str(new) for _, new in change.fields.values())
                    env = new_envelope(
                        type=RECOMPUTE,
                        subject=case.worker_id,
                        data=command_data(case, policy),
                        id=f"repolicy:{case.case_id}:{digest}:{target}",
                        source=SOURCE,
                        time=datetime.now(UTC),
                    )
                    await relay.send_raw(
                        topic,
                        case.worker_id.encode(),
                        encode(env),
                        [("content-type", b"application/cloudevents+json")],
                    )
                    report.sent += 1
                if progress is not None:
                    progress(report)
        finally:
            if relay is not None:
                await relay.stop()
    return report
